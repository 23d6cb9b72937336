"""Start-up: planning and checking import no model code they do not run.

``cxrlib check`` and a notebook's first cell import the planning modules; timm (with
torchvision) and pytorch-grad-cam load only when a model is built or a heatmap drawn."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import timm

from cxrlib.models import get_model_spec, list_models
from cxrlib.models import weights

REPO = Path(__file__).resolve().parent.parent


def _loaded_after(code: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def test_planning_and_checking_import_no_timm_nor_grad_cam():
    loaded = _loaded_after("from cxrlib import experiments, preflight, profiles, references, plots, sweep\n"
                           "from cxrlib.models import weights\n"
                           "spec = __import__('cxrlib.models', fromlist=['x']).get_model_spec('densenet121')\n"
                           "weights.find_local(spec.timm_name); weights.fetch_help(spec.timm_name)")
    assert "torch" in loaded and "cxrlib" in loaded
    assert "timm" not in loaded and "pytorch_grad_cam" not in loaded


def test_the_hub_location_of_every_registered_backbone_is_timms_own():
    for name in list_models():
        timm_name = get_model_spec(name).timm_name
        cfg = timm.models.get_pretrained_cfg(timm_name)
        assert weights.hub_repo(timm_name) == cfg.hf_hub_id, name
        assert weights.hub_filename(timm_name) == (cfg.hf_hub_filename or weights.HUB_FILES[0]), name
