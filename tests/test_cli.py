"""The command line: help texts, errors that name the bad value, and a smoke run end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cxrlib.cli import build_config, build_parser, main

COMMANDS = ("train", "evaluate", "predict", "cache")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"
            assert action.option_strings[-1] in out


def test_config_layers_profile_options_and_set():
    args = build_parser().parse_args(["train", "--profile", "smoke", "--epochs", "4", "--model", "densenet121",
                                      "--name", "x", "--set", "train.batch_size=4", "--set", "train.lr=0.01",
                                      "--wrapper", "none"])
    cfg = build_config(args)
    from cxrlib import profiles

    profile = profiles.load("smoke").baseline
    assert cfg.data.image_size == profile.data.image_size and cfg.runs_dir == profile.runs_dir
    assert (cfg.train.epochs, cfg.model.name, cfg.name, cfg.train.batch_size, cfg.train.lr) == (4, "densenet121", "x",
                                                                                              4, 0.01)
    assert cfg.model.wrapper is None
    default = build_config(build_parser().parse_args(["train"]))
    assert default.train.lr == 1e-3 and default.train.optimizer == "adam"  # CheXNet recipe


def test_a_data_dir_given_to_a_phantom_profile_means_chestxray14():
    """The same rule as the report's notebooks: phantoms read no folder."""
    cfg = build_config(build_parser().parse_args(["cache", "--profile", "smoke", "--data-dir", "/data/cxr14"]))
    assert (cfg.data.source, cfg.data.data_dir) == ("chestxray14", "/data/cxr14")
    cfg = build_config(build_parser().parse_args(["train", "--data-dir", "x.npz", "--source", "pneumoniamnist"]))
    assert (cfg.data.source, cfg.data.data_dir) == ("pneumoniamnist", "x.npz")


@pytest.mark.parametrize("argv,needle", [
    (["train", "--source", "mnist"], "'mnist'"),
    (["train", "--set", "train.nope=1"], "'nope'"),
    (["train", "--set", "epochs3"], "epochs3"),
    (["train", "--model", "alexnet9"], "'alexnet9'"),
    (["train", "--head", "bigpool"], "'bigpool'"),
    (["train", "--device", "tpu"], "'tpu'"),
    (["train", "--profile", "nosuchprofile"], "nosuchprofile"),
    (["train", "--set", "train.loss=hinge"], "'hinge'"),
    (["evaluate", "--run", "/nonexistent/run"], "/nonexistent/run"),
    (["predict", "x.png"], "--run"),
    (["predict", "/nonexistent/x.png", "--run", "/nonexistent/run"], "/nonexistent/run"),
])
def test_errors_name_the_bad_value(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_argparse_rejects_bad_types(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "three"])
    assert exc.value.code == 2 and "three" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--checkpoint-every", "0"])
    assert "'0'" in capsys.readouterr().err


def test_unreadable_image_is_named(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning, match="untrained"):
        assert main(["predict", str(bad), "--model", "resnet18", "--device", "cpu"]) == 2
    assert "broken.png" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_train_evaluate_predict(tmp_path, capsys, cxr14_sample):
    common = ["--profile", "smoke", "--name", "cli", "--runs-dir", str(tmp_path / "runs"),
              "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["train", *common, "--quiet"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "cli"
    assert "mean" in out and str(run) in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["experiment"] == "cli" and m["source"] == "phantoms" and len(m["per_class"]) == 14

    assert main(["evaluate", "--run", str(run), "--n-bootstrap", "20", "--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text())["n_bootstrap"] == 20
    assert "mean" in capsys.readouterr().out

    png = sorted((cxr14_sample / "images").glob("*.png"))[0]
    jpg = tmp_path / "xray.jpg"
    Image.open(png).convert("L").save(jpg)
    assert main(["predict", str(png), str(jpg), "--run", str(run), "--json", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in res] == [str(png), str(jpg)]
    for r in res:
        probs = np.array(list(r["probabilities"].values()))
        assert len(probs) == 14 and ((probs > 0) & (probs < 1)).all()
        assert list(r["probabilities"])[0] == "Atelectasis"
    # a JPEG of the same image scores like the PNG (same decode-resize path)
    assert np.allclose(list(res[0]["probabilities"].values()), list(res[1]["probabilities"].values()), atol=0.05)
    assert main(["predict", str(png), "--run", str(run), "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == str(png) and len(table) == 15 and table[1].split()[0] == "Atelectasis"
