"""Models: registry, every backbone x head, wrappers, pretrained loading, Grad-CAM layers.

Sizes are the smallest each backbone accepts (32 px; Inception-v3 75 px), batch 2, so the
whole file stays small on two CPU cores. No test may touch the network: an autouse fixture
makes sockets fail and puts the Hugging Face hub offline with an empty cache.
"""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from cxrlib import plots_attention
from cxrlib.config import ModelConfig
from cxrlib.labels import FINDINGS
from cxrlib.models import (
    ModelError,
    PretrainedWeightsError,
    cam_target_layers,
    create_model,
    create_model_from_config,
    get_model_spec,
    list_heads,
    list_models,
    list_wrappers,
)
from cxrlib.models.two_stage import largest_region_boxes

STUDY = ["resnet18", "resnet50", "densenet121", "inception_v3", "nasnet"]
BACKBONES = STUDY + ["convnext_tiny", "efficientnet_b0"]
HEADS = ["gap", "fpn", "psp"]
HEAVY = {"nasnet", "inception_v3", "convnext_tiny"}  # > ~3 s per case on two busy cores


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("CXRLIB_WEIGHTS_DIR", str(tmp_path / "weights"))  # not the checkout's data/weights


def side(model) -> int:
    return max(32, model.min_input_size)


def check_forward_backward(model, size: int, in_chans: int = 1, batch: int = 2):
    torch.manual_seed(0)
    x = torch.randn(batch, in_chans, size, size)
    seen = {}

    def hook(module, args, output):
        seen["out"], seen["version"] = output, output._version

    handle = cam_target_layers(model)[0].register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    assert logits.shape == (batch, model.info.num_classes)
    assert torch.isfinite(logits).all()
    # Grad-CAM reads the hooked output after forward: nothing may have changed it in place.
    assert seen["out"]._version == seen["version"], "CAM layer output was modified in place"
    logits.square().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)
    return logits


# --- registry ---

def test_registry_lists_everything():
    assert set(BACKBONES) <= set(list_models())
    assert list_heads() == ["fpn", "gap", "psp"]
    assert list_wrappers() == ["multiscale", "two_stage"]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(name="vgg16"), ["vgg16", "resnet50", "densenet121", "nasnet"]),
        (dict(name="resnet18", head="unet"), ["unet", "fpn", "gap", "psp"]),
        (dict(name="resnet18", wrapper="cascade"), ["cascade", "multiscale", "two_stage"]),
        (dict(name="resnet18", head="fpn", fpn_chanels=64), ["fpn_chanels", "fpn_channels", "drop_rate"]),
        (dict(name="resnet18", num_classes=0), ["num_classes", "15"]),
    ],
)
def test_registry_errors_name_the_value_and_the_choices(kwargs, words):
    with pytest.raises(ModelError) as err:
        create_model(**kwargs)
    for word in words:
        assert word in str(err.value)


# --- every backbone x head ---

@pytest.mark.parametrize(
    "name, head",
    [pytest.param(n, h, marks=[pytest.mark.slow] if n in HEAVY else []) for n in BACKBONES for h in HEADS],
)
def test_every_backbone_with_every_head_trains(name, head):
    model = create_model(name, head=head, num_classes=14, in_chans=1)
    assert model.stages is None
    assert model.info.name == f"{name}+{head}" and model.info.feature_channels == get_model_spec(name).channels
    assert model.backbone.channels == get_model_spec(name).channels  # checked against timm's feature_info
    assert tuple(model.backbone.body.feature_info.reduction()) == (8, 16, 32)
    check_forward_backward(model, side(model))


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_three_channel_input_and_fifteen_labels(name):
    model = create_model(name, head="gap", num_classes=15, in_chans=3)
    logits = check_forward_backward(model, 32, in_chans=3)
    assert logits.shape == (2, 15)


def test_inputs_too_small_or_with_wrong_channels_are_refused():
    model = create_model("inception_v3")
    assert model.info.min_input_size == 75 and model.info.input_size == 299
    with pytest.raises(ModelError, match=r"at least 75x75.*64x64"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ModelError, match=r"\[B, 1, H, W\].*in_chans=3"):
        create_model("resnet18")(torch.zeros(1, 3, 32, 32))


def test_create_model_from_config():
    cfg = ModelConfig(name="resnet18", head="psp", in_chans=1, options={"psp_channels": 64, "drop_rate": 0.2})
    model = create_model_from_config(cfg, num_classes=15)
    assert model.info.options["psp_channels"] == 64 and model.info.embedding_channels == 64
    assert model.classifier.drop.p == 0.2 and model.info.num_classes == 15


def test_create_model_from_config_can_skip_pretrained_weights(tmp_path):
    """A saved run rebuilds its architecture only: no hub, no weights file (it may be gone)."""
    cfg = ModelConfig(name="resnet18", pretrained=True, weights_path=str(tmp_path / "gone.pth"))
    model = create_model_from_config(cfg, num_classes=14, pretrained=False)
    assert model.info.pretrained == "none"
    with pytest.raises(PretrainedWeightsError, match="gone.pth"):
        create_model_from_config(cfg, num_classes=14)


def test_registry_is_a_leaf_module():
    """The registry imports no model code, so the model modules can import it without a cycle."""
    import ast

    import cxrlib.models.registry as registry

    tree = ast.parse(Path(registry.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in imported if m.startswith("cxrlib")} == {"cxrlib.models.errors"}


# --- wrappers ---

@pytest.mark.parametrize("name, head", [("resnet18", "gap"), ("efficientnet_b0", "fpn")])
def test_multiscale_runs_and_needs_room_for_its_low_resolution_copy(name, head):
    model = create_model(name, head=head, wrapper="multiscale", low_res=0.5, shallow_channels=(8, 8, 16))
    assert model.stages is None and model.min_input_size == 64
    check_forward_backward(model, 64)
    assert cam_target_layers(model) == [model.fuse]
    with pytest.raises(ModelError, match="at least 64x64"):
        model(torch.zeros(1, 1, 48, 48))
    pixels = create_model(name, wrapper="multiscale", low_res=40)
    assert pixels.low_size(96, 96) == (40, 40)
    with pytest.raises(ModelError, match="low_res"):
        create_model(name, wrapper="multiscale", low_res=2.5)


def test_largest_region_boxes_pick_the_largest_connected_region_for_the_whole_batch():
    heat = torch.zeros(4, 20, 30)
    heat[0, 2:5, 3:6] = 1.0  # 9 cells, the peak
    heat[0, 10:16, 12:20] = 0.8  # 48 cells, above 0.7 of the peak: the largest region
    heat[0, 10:16, 25:26] = 0.5  # below the threshold
    heat[1, 0, 0] = 1.0  # 8-connected: a diagonal chain is one region, larger than the 2x2 block
    for k in range(1, 7):
        heat[1, k, k] = 0.9
    heat[1, 15:17, 20:22] = 1.0
    heat[3] = float("nan")
    boxes = largest_region_boxes(heat, 0.7)
    assert boxes.tolist() == [[12, 10, 20, 16], [0, 0, 7, 7], [0, 0, 30, 20], [0, 0, 30, 20]]


def test_the_batched_crop_reads_what_a_resize_of_each_sliced_box_reads():
    torch.manual_seed(0)
    model = create_model("resnet18", wrapper="two_stage", num_classes=3)
    x = torch.randn(3, 1, 64, 64)
    boxes = torch.tensor([[0, 0, 64, 64], [10, 20, 34, 44], [40, 3, 61, 50]])
    got = model.crop(x, boxes, (48, 48))
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        want = torch.nn.functional.interpolate(x[i:i + 1, :, y0:y1, x0:x1], size=(48, 48), mode="bilinear",
                                               align_corners=False)
        assert (got[i:i + 1] - want).abs().max() < 1e-4, i  # float rounding of the grid only


def test_two_stage_crops_inside_the_image_and_the_local_branch_learns_through_the_crop():
    torch.manual_seed(0)
    model = create_model("resnet18", wrapper="two_stage", num_classes=15, tau=0.7, local_size=48)
    assert model.stages == ("global", "local", "fusion")
    x = torch.randn(2, 1, 96, 96)
    model.eval()
    heat, boxes = model.attention(x)
    assert heat.shape == (2, 96, 96) and float(heat.max()) == pytest.approx(1.0)
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 96).all() and (y1 <= 96).all()
    assert (x1 > x0).all() and (y1 > y0).all()

    model.set_stage("local")
    model.train()
    assert not any(p.requires_grad for p in model.global_branch.parameters())
    assert not model.global_branch.training and model.local_branch.training
    logits = model(x)
    assert logits.shape == (2, 15)
    logits.sum().backward()
    assert all(p.grad is None for p in model.global_branch.parameters())
    assert all(p.grad is None for p in model.fusion.parameters())
    assert model.local_branch.backbone.body.conv1.weight.grad.abs().sum() > 0

    # The crop itself is differentiable: the input gets gradient inside the box, none outside.
    xin = x.clone().requires_grad_(True)
    box = torch.tensor([[10, 20, 34, 44], [0, 0, 96, 96]])  # 24x24 upsampled: every pixel counts
    crops = model.crop(xin, box, (48, 48))
    assert crops.shape == (2, 1, 48, 48)
    crops.sum().backward()
    inside = torch.zeros(96, 96, dtype=torch.bool)
    inside[20:44, 10:34] = True
    g = xin.grad[0, 0]
    assert g[inside].abs().min() > 0 and g[~inside].abs().sum() == 0


def test_the_attention_figure_draws_the_models_own_box_and_crop():
    torch.manual_seed(0)
    model = create_model("resnet18", wrapper="two_stage", num_classes=14, tau=0.7).eval()
    images = torch.randn(2, 1, 64, 64)
    targets = np.zeros((2, 14), dtype=np.float32)
    targets[0, 5] = 1
    dataset = type("Images", (), {"targets": targets, "image_ids": ["a", "b"], "label_names": list(FINDINGS),
                                  "__getitem__": lambda self, i: (images[i], torch.as_tensor(targets[i]))})()
    fig = plots_attention.plot_attention_crops(model, dataset, [0, 1])
    _, boxes = model.attention(images)
    assert len(fig.axes) == 6
    for row, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        first, _, crop = fig.axes[3 * row: 3 * row + 3]
        (rect,) = first.patches
        assert (rect.get_width(), rect.get_height()) == (x1 - x0, y1 - y0)
        assert crop.images[0].get_array().shape == (y1 - y0, x1 - x0)  # the very pixels the local branch reads
        np.testing.assert_allclose(crop.images[0].get_array(), images[row, 0, y0:y1, x0:x1].numpy())
    assert "Nodule" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="needs a two-stage model"):
        plots_attention.plot_attention_crops(create_model("resnet18"), dataset, [0])


def test_crop_sizes_count_the_models_own_boxes_over_the_dataset():
    torch.manual_seed(0)
    model = create_model("resnet18", wrapper="two_stage", num_classes=3, attention_layer="C4").eval()
    images = torch.randn(5, 1, 48, 48)
    dataset = type("Images", (), {"__len__": lambda self: 5, "__getitem__": lambda self, i: (images[i], None)})()
    _, boxes = model.attention(images)
    share = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double().numpy() / 48 ** 2
    row = plots_attention.attention_crop_sizes(model, dataset, batch_size=2).iloc[0]  # batches of 2, 2, 1
    assert (row["images"], row["attention layer"], row["tau"]) == (5, "C4", 0.7)
    assert row["whole-image crops"] == pytest.approx(np.mean(share >= 1))
    assert row["mean crop area"] == pytest.approx(share.mean()) and row["median crop area"] == pytest.approx(np.median(share))
    with pytest.raises(ValueError, match="needs a two-stage model"):
        plots_attention.attention_crop_sizes(create_model("resnet18"), dataset)


def test_two_stage_stages_choose_the_output_and_what_trains():
    torch.manual_seed(0)
    model = create_model("resnet18", wrapper="two_stage", num_classes=14)
    x = torch.randn(2, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        out = {}
        for stage in model.stages:
            model.set_stage(stage)
            out[stage] = model(x)
        g = model.global_classifier(model.global_branch(x))
    assert torch.allclose(out["global"], g)
    assert not torch.allclose(out["global"], out["local"]) and not torch.allclose(out["local"], out["fusion"])

    model.set_stage("fusion")
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fusion.1.weight", "fusion.1.bias"}
    model(x).sum().backward()
    assert model.fusion[1].weight.grad.abs().sum() > 0

    # The stage travels with the weights: a fresh model loading them answers as "fusion".
    fresh = create_model("resnet18", wrapper="two_stage", num_classes=14)
    assert fresh.stage == "global"
    fresh.load_state_dict(model.state_dict())
    assert fresh.stage == "fusion"
    with pytest.raises(ModelError, match="global, local, fusion"):
        model.set_stage("joint")


@pytest.mark.slow
def test_two_stage_with_another_backbone_and_head_trains_each_stage():
    model = create_model("efficientnet_b0", head="psp", wrapper="two_stage", psp_channels=32)
    for stage in model.stages:
        model.set_stage(stage)
        model.train()
        model.zero_grad(set_to_none=True)
        check_forward_backward(model, 32)


# --- pretrained weights ---

def test_weights_file_loads_exactly_with_the_first_conv_summed_over_rgb(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", num_classes=1000)  # 3-channel conv1, random weights
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(source.state_dict(), path)
    saved = torch.load(path)

    model = create_model("resnet18", in_chans=1, weights_path=str(path))
    assert model.info.pretrained == str(path)
    loaded = model.backbone.body.state_dict()
    assert torch.equal(loaded["conv1.weight"], saved["conv1.weight"].sum(dim=1, keepdim=True))
    for key, value in loaded.items():
        if key != "conv1.weight":
            assert torch.equal(value, saved[key]), key

    # Output: a gray image through the summed conv equals the RGB model on the image repeated.
    reference = timm.create_model("resnet18", features_only=True, out_indices=(2, 3, 4))
    reference.load_state_dict({k: v for k, v in saved.items() if not k.startswith("fc.")})
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ours = model.backbone.eval()(x)
        theirs = reference.eval()(x.repeat(1, 3, 1, 1))
        random_init = create_model("resnet18").backbone.eval()(x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours[-1], random_init[-1])


def test_bad_or_missing_weights_files_are_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(PretrainedWeightsError, match="nope.pth"):
        create_model("resnet18", weights_path=missing)
    wrong = tmp_path / "densenet-as-resnet.pth"
    torch.save(timm.create_model("densenet121").state_dict(), wrong)
    with pytest.raises(PretrainedWeightsError, match="densenet-as-resnet.pth do not fit resnet18.*conv1.weight"):
        create_model("resnet18", weights_path=wrong)


def test_pretrained_offline_without_a_cache_explains_what_to_do(tmp_path):
    with pytest.raises(PretrainedWeightsError) as err:
        create_model("densenet121", pretrained=True)
    message = str(err.value)
    assert "no network" in message and "weights_path=" in message
    assert str(tmp_path / "hf-hub" / "models--timm--densenet121.tv_in1k") in message


# --- Grad-CAM ---

@pytest.mark.parametrize(
    "kwargs",
    [
        dict(name="densenet121"),  # torchvision's in-place ReLU trap
        dict(name="resnet18", head="fpn"),
        dict(name="resnet18", head="psp"),
        dict(name="resnet18", wrapper="multiscale"),
        dict(name="resnet18", wrapper="two_stage"),
    ],
)
def test_grad_cam_works_on_the_chosen_layer(kwargs):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = create_model(num_classes=14, **kwargs)
    if model.stages:
        model.set_stage("fusion")  # every branch frozen: the hardest case for gradients
    model.eval()
    size = max(64, model.min_input_size)  # C5 at least 2x2, so the map is not constant
    with GradCAM(model=model, target_layers=cam_target_layers(model)) as cam:
        maps = cam(torch.randn(2, 1, size, size), targets=[ClassifierOutputTarget(3)] * 2)
    assert maps.shape == (2, size, size) and np.isfinite(maps).all()
    assert maps.max() > 0
    assert model.info.cam_layer and model.info.cam_reason


def test_the_deterministic_bilinear_resize_is_the_bilinear_resize():
    """Under train.deterministic on CUDA, PSP and multi-scale resize by two matmuls (a
    deterministic backward); the result is F.interpolate's, forward and backward."""
    from cxrlib.models.resize import resize_bilinear

    torch.manual_seed(0)
    for shape, size in [((2, 3, 7, 7), (14, 14)), ((1, 2, 3, 5), (7, 7)), ((2, 1, 9, 9), (4, 5)), ((1, 1, 1, 1), (7, 7))]:
        x = torch.randn(*shape, requires_grad=True)
        want = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        (gw,) = torch.autograd.grad(want.square().sum(), x)
        got = resize_bilinear(x, size, exact_backward=True)
        (gg,) = torch.autograd.grad(got.square().sum(), x)
        assert torch.allclose(got, want, atol=1e-5) and torch.allclose(gg, gw, atol=1e-4)
    assert not torch.are_deterministic_algorithms_enabled()  # the default path elsewhere: the fused kernel


def test_the_box_is_the_cells_the_attention_figure_shows():
    """attention()'s map shows C5's cells as blocks (nearest); the box's edges are those blocks'
    edges, also where the grid does not divide the image evenly, and it holds the peak cell."""
    torch.manual_seed(0)
    model = create_model("resnet18", wrapper="two_stage", num_classes=3, tau=0.7).eval()
    x = torch.randn(4, 1, 70, 70)  # C5 is 3 x 3: the blocks are pixels 0-23, 24-46, 47-69
    heat, boxes = model.attention(x)
    edges = {0, 24, 47, 70}
    for h, (x0, y0, x1, y1) in zip(heat, boxes.tolist()):
        assert {x0, y0, x1, y1} <= edges and x1 > x0 and y1 > y0
        blocks = h[[0, 24, 47]][:, [0, 24, 47]]  # one pixel per block
        assert torch.equal(h, blocks.repeat_interleave(torch.tensor([24, 23, 23]), 0)
                           .repeat_interleave(torch.tensor([24, 23, 23]), 1))
        assert bool((h[y0:y1, x0:x1] >= 0.7).any())  # the box is made of cells above the threshold


def test_attention_from_c4_gives_a_finer_grid_and_its_own_boxes():
    """At 48 px ResNet-18's C5 is 2 x 2 (24 px blocks), C4 is 3 x 3 (16 px blocks); the option
    changes only where the crop is read, and a bad value names the option."""
    from cxrlib.models import ModelError

    torch.manual_seed(0)
    c5 = create_model("resnet18", wrapper="two_stage", num_classes=3).eval()
    c4 = create_model("resnet18", wrapper="two_stage", num_classes=3, attention_layer="C4").eval()
    c4.load_state_dict(c5.state_dict())  # the same weights: only the attention's layer differs
    x = torch.randn(6, 1, 48, 48)
    for model, side in ((c5, 24), (c4, 16)):
        heat, boxes = model.attention(x)
        assert set(boxes.flatten().tolist()) <= set(range(0, 49, side))
        assert len(torch.unique(heat[0][::side, ::side])) == (48 // side) ** 2  # one value per block
        assert torch.equal(heat[0], heat[0][::side, ::side].repeat_interleave(side, 0).repeat_interleave(side, 1))
    with torch.no_grad():
        c5.set_stage("fusion"), c4.set_stage("fusion")
        assert not torch.equal(c5(x), c4(x))  # the local branch reads other crops
    assert c4.info.options["attention_layer"] == "C4"
    with pytest.raises(ModelError, match="attention_layer.*C5, C4"):
        create_model("resnet18", wrapper="two_stage", num_classes=3, attention_layer="C3")


def test_psp_bins_on_a_2x2_map_are_what_notebook_03_says():
    """At 48 px ResNet-18's C5 is 2 x 2: bins 2 and 6 give back each cell's own value, bin 3 a
    fixed blend of the four cells, and only bin 1 the mean the map does not hold at any cell."""
    import torch.nn.functional as F

    from cxrlib.models.heads import PSPHead

    torch.manual_seed(0)
    head = PSPHead((8, 8, 16), bins=(1, 2, 3, 6)).eval()
    c5 = torch.randn(2, 16, 2, 2)
    with torch.no_grad():
        for b, stage in zip(head.bins, head.stages):
            back = F.interpolate(stage(c5), size=c5.shape[-2:], mode="bilinear", align_corners=False)
            cellwise = stage[2](stage[1](c5))  # the branch's 1x1 conv and ReLU on each cell, no pooling
            mean = stage[2](stage[1](c5.mean(dim=(2, 3), keepdim=True))).expand_as(back)
            if b in (2, 6):
                assert torch.allclose(back, cellwise, atol=1e-5), f"bin {b} should give back the cells themselves"
            elif b == 1:
                assert torch.allclose(back, mean, atol=1e-6) and not torch.allclose(back, cellwise, atol=1e-3)
            else:  # bin 3: neither the cells nor their mean
                assert not torch.allclose(back, cellwise, atol=1e-3) and not torch.allclose(back, mean, atol=1e-3)
