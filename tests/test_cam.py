"""Heatmaps: shapes and ranges, agreement with pytorch-grad-cam, one forward for all findings,
every model family of the registry, the DenseNet in-place trap, overlays, and a learning check."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cxrlib import cam, localization as loc
from cxrlib.overlay import render
from cxrlib.seed import set_seed


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", in_chans=1, num_classes=14).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 1, 64, 64, generator=g)


def _count_forwards(model: nn.Module) -> tuple[list[int], object]:
    calls = [0]
    handle = model.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls, handle


@pytest.mark.parametrize("method", sorted(cam.CAM_METHODS))
def test_heatmaps_shape_range_for_every_method(resnet, batch, method):
    maps = cam.heatmaps(resnet, batch, [0, 5, 13], method=method, target_layers=[resnet.layer4])
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    if method == "randomcam":
        # random channel weights (NumPy's global generator) may give a map with no positive
        # part, which comes out all zero: each map is either that or scaled to a peak of 1
        assert all(p == 0.0 or p == pytest.approx(1.0) for p in peaks)
    else:
        assert maps.max() == pytest.approx(1.0)  # not degenerate on this model


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "layercam", "eigencam"])
def test_matches_pytorch_grad_cam_with_one_target_per_image(resnet, batch, method):
    ours = cam.heatmaps(resnet, batch, [0, 5, 4], method=method, target_layers=[resnet.layer4])
    with cam.CAM_METHODS[method](resnet, [resnet.layer4]) as library:
        theirs = library(batch, [ClassifierOutputTarget(k) for k in (0, 5, 4)])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_all_findings_equal_single_calls_with_one_forward(resnet, batch):
    calls, handle = _count_forwards(resnet)
    try:
        all_maps = cam.heatmaps_all_findings(resnet, batch[1], target_layers=[resnet.layer4])
        assert calls[0] == 1
        assert all_maps.shape == (14, 64, 64)
        single = np.stack([cam.heatmap(resnet, batch[1], k, target_layers=[resnet.layer4]) for k in range(14)])
    finally:
        handle.remove()
    np.testing.assert_allclose(all_maps, single, atol=1e-5)
    # Different findings give different maps (the per-class gradients are really per class).
    assert np.abs(all_maps[0] - all_maps[5]).max() > 1e-3
    # Finding names work too, and a subset keeps its order.
    sub = cam.heatmaps_all_findings(resnet, batch[1], target_layers=[resnet.layer4], classes=["Nodule", 0])
    np.testing.assert_allclose(sub, all_maps[[5, 0]], atol=1e-6)


def test_works_under_no_grad_in_train_mode_and_restores_mode(batch):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", in_chans=1, num_classes=14)
    model.train()
    with torch.no_grad():
        maps = cam.heatmaps(model, batch, 2, target_layers=[model.layer4])
    assert model.training  # caller's mode restored
    model.eval()
    np.testing.assert_allclose(maps, cam.heatmaps(model, batch, 2, target_layers=[model.layer4]), atol=1e-6)
    # A frozen model still yields gradients at the target layer.
    for p in model.parameters():
        p.requires_grad_(False)
    np.testing.assert_allclose(maps, cam.heatmaps(model, batch, 2, target_layers=[model.layer4]), atol=1e-6)


def test_flat_maps_are_zeros_not_nan():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 1)
            self.fc = nn.Linear(4, 14)
            nn.init.zeros_(self.conv.weight)

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    model = Constant()
    maps = cam.heatmaps_all_findings(model, torch.randn(1, 16, 16), target_layers=[model.conv])
    assert np.isfinite(maps).all() and not maps.any()


def test_torchvision_densenet_inplace_relu_after_target_layer():
    from torchvision.models import densenet121

    torch.manual_seed(0)
    model = densenet121(num_classes=14).eval()
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    # Hand Grad-CAM: logit = fc(mean(relu(f))), so d logit / d f = (f > 0) * w / (h*w).
    with torch.no_grad():
        f = model.features(x)[0]
        raws = []
        for k in range(14):
            grad = (f > 0).float() * model.classifier.weight[k][:, None, None] / f[0].numel()
            raws.append(torch.relu((grad.mean(dim=(1, 2))[:, None, None] * f).sum(0)))
    k = next(k for k, r in enumerate(raws) if r.max() > r.min())  # a class with a non-flat map
    raw = raws[k]
    maps = cam.heatmaps(model, x, [k], target_layers=[model.features])
    expected = cam.resize_heatmap(((raw - raw.min()) / (raw.max() - raw.min())).numpy(), (96, 96))
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(maps[0], expected, atol=1e-4)


def test_bad_inputs_name_the_problem(resnet, batch):
    with pytest.raises(ValueError, match="unknown CAM method"):
        cam.heatmaps(resnet, batch, 0, method="nope", target_layers=[resnet.layer4])
    with pytest.raises(ValueError, match="one per image"):
        cam.heatmaps(resnet, batch, [0, 1], target_layers=[resnet.layer4])
    with pytest.raises(ValueError, match=r"\[B,C,H,W\]"):
        cam.heatmaps(resnet, batch[0], [0], target_layers=[resnet.layer4])
    with pytest.raises(ValueError, match="out of range"):
        cam.heatmap(resnet, batch[0], 14, target_layers=[resnet.layer4])
    with pytest.raises(ValueError, match="not used by this model"):
        cam.heatmap(resnet, batch[0], 0, target_layers=[nn.Conv2d(1, 1, 1)])


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [dict(head="gap"), dict(head="fpn"), dict(head="psp"), dict(wrapper="multiscale"), dict(wrapper="two_stage")],
    ids=["gap", "fpn", "psp", "multiscale", "two_stage"],
)
def test_every_model_family_from_the_registry(kwargs):
    from cxrlib.models import cam_target_layers, create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=14, in_chans=1, **kwargs)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    layers = cam_target_layers(model)
    maps = cam.heatmaps(model, x, [0, 5])  # layers from the registry
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    calls, handle = _count_forwards(model)
    try:
        all_maps = cam.heatmaps_all_findings(model, x[0])
    finally:
        handle.remove()
    assert calls[0] == 1 and all_maps.shape == (14, 64, 64)
    np.testing.assert_allclose(all_maps[[0, 5]], np.stack([maps[0], cam.heatmap(model, x[0], 5, target_layers=layers)]),
                               atol=1e-5)


def test_overlay_on_full_resolution_image_with_boxes():
    import matplotlib

    matplotlib.use("Agg")
    from types import SimpleNamespace

    full = np.zeros((120, 100), dtype=np.uint8)
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[2, 6] = 1.0
    box = SimpleNamespace(finding="Nodule", x=70, y=25, w=10, h=10)
    ax = cam.overlay(full, heat, boxes=[box], title="Nodule")
    (image,) = ax.get_images()
    picture = np.asarray(image.get_array())
    assert picture.shape == (120, 100, 3)  # heatmap resized to the full image, blended
    # The picture is cxrlib.overlay's, the one the demo shows, in full-image coordinates.
    np.testing.assert_array_equal(picture, render(full, heat, [box]))
    assert list(image.get_extent()) == [-0.5, 99.5, 119.5, -0.5]
    assert picture[37, 81, 0] > picture[100, 20, 0], "the hot spot is drawn where the heatmap is hot"

    def green(rgb):
        return np.all(np.asarray(rgb) == (0, 255, 0), axis=-1)

    assert green(picture)[25, 71] and green(picture)[30, 70]  # the box's top and left edges at (70, 25)
    assert [t.get_text() for t in ax.texts] == ["Nodule"] and ax.texts[0].get_position() == (70, 21)
    assert ax.get_title() == "Nodule"
    mask = np.zeros((12, 10), bool)
    mask[1:5, 1:4] = True
    fig = cam.overlay_grid(full, np.stack([heat, heat]), ["Mass", "Nodule"], boxes=[box], probabilities=[0.1, 0.9],
                           masks=[None, mask])
    panels = [a for a in fig.axes if a.get_images()]
    drawn = [green(a.get_images()[0].get_array()) for a in panels]
    assert [d.any() for d in drawn] == [False, True]  # each finding's own box only
    assert drawn[1][10:50, 10:40].any()  # and its own mask's outline
    assert panels[1].get_title() == "Nodule 0.90"
    with pytest.raises(ValueError, match="one .or None. per finding"):
        cam.overlay_grid(full, np.stack([heat, heat]), ["Mass", "Nodule"], masks=[mask])
    matplotlib.pyplot.close("all")


@pytest.mark.slow
def test_trained_model_points_at_the_mass_nearer_than_chance():
    """Grad-CAM of a small CNN trained on phantoms points at held-out masses far above chance.

    The claim must hold on any processor and thread count, where the same steps take other
    floating-point paths, so it rests on a large effect and statistical bars rather than on
    one trajectory: ~470 training images (masses enlarged 2x), a network whose global max
    pooling makes it take its evidence from one place (Oquab et al., CVPR 2015), horizontal
    flips, 250 steps; then 72 held-out images with a mass. Bars: strict pointing-game hits
    beyond the mean mask share at a binomial p < 1e-6 (at least 10 hits where chance expects
    about one); pointing within one CAM cell and the energy inside the mask above random maps
    on the model's own 16x16 grid, and the peak nearer the mass than a random point, each by
    a paired bootstrap CI over the images. Measured: 58 (one thread) and 63 (two) strict hits
    of the 72.
    """
    from scipy.stats import binom

    from cxrlib.data.datasets import to_model_input
    from cxrlib.metrics import paired_mean_difference
    from cxrlib.phantoms import PhantomSpec, phantom_table, render_phantom

    size, mass, n_phantoms, cut = 64, 4, 6000, 4800  # FINDINGS index of Mass
    spec = PhantomSpec(lesion_scale=2.0)
    set_seed(0)
    table = phantom_table(n_phantoms, seed=0, spec=spec)
    labels = table["Mass"].to_numpy()
    pos, neg = np.flatnonzero(labels), np.flatnonzero(labels == 0)
    train_ids = np.concatenate([pos[pos < cut], neg[neg < cut][: int((pos < cut).sum())]])
    test_ids = pos[pos >= cut]  # held-out phantoms, each with a mass
    train = [render_phantom(int(i), size, seed=0, spec=spec) for i in train_ids]
    test = [render_phantom(int(i), size, seed=0, spec=spec) for i in test_ids]
    x = to_model_input(np.stack([p.image for p in train]))
    y = torch.tensor(np.stack([p.labels[[mass]] for p in train]))

    def block(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    torch.manual_seed(0)
    features = nn.Sequential(block(1, 8), block(8, 16, 2), block(16, 16), block(16, 32, 2), block(32, 32))
    model = nn.Sequential(features, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(250):
        idx = torch.randint(0, len(x), (32,), generator=g)
        flip = torch.rand(len(idx), generator=g) < 0.5
        batch = torch.where(flip[:, None, None, None], x[idx].flip(-1), x[idx])
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    tx = to_model_input(np.stack([p.image for p in test]))
    maps = cam.heatmaps(model, tx, [0] * len(test), target_layers=[features])
    masks = [p.masks[mass] for p in test]
    result = loc.localization_table(list(maps), masks, ["Mass"] * len(test)).loc["Mass"]
    n, chance = int(result["n"]), float(result["random_baseline"])
    hits = int(round(result["pointing_game"] * n))
    assert n == len(test) >= 60 and chance < 0.05
    p_value = binom.sf(hits - 1, n, chance)  # P(at least `hits` hits by chance)
    assert p_value < 1e-6, f"{hits}/{n} hits, chance {chance:.4f} per image, p = {p_value:.2g}"
    # Chance measured with random maps on the model's own grid: a 16x16 grid at 64 px, a cell
    # is 4 px, and a peak within one cell of the mask counts (the pointing game's tolerance).
    ids = [str(i) for i in test_ids]
    grid = cam.target_grids(model, tx[0], [features])
    assert grid == [(16, 16)]
    scores = loc.localization_scores(list(maps), masks, ["Mass"] * len(test), ids, tolerance=4)
    random_maps = loc.random_map_scores(masks, ["Mass"] * len(test), [(size, size)] * len(test), grid,
                                        (size, size), n_draws=20, image_ids=ids, tolerance=4)
    versus = loc.compare_with_random(scores.merge(random_maps, on=["image_id", "finding"]),
                                     metrics=["pointing_game", "energy"], n_bootstrap=1000)
    pointing, energy = versus.loc[("Mass", "pointing_game")], versus.loc[("Mass", "energy")]
    assert pointing["ci_low"] > 0, versus
    assert energy["ci_low"] > 0 and energy["model"] > 2 * energy["random map"], versus
    # Nearer than chance: the peak's distance to the mask's centre against a uniformly random
    # point's mean distance, paired over the same images.
    rows, cols = np.mgrid[0:size, 0:size]
    peak_dist, random_dist = [], []
    for heat, mask in zip(maps, masks):
        cy, cx = np.argwhere(mask).mean(axis=0) + 0.5
        r, c = loc.peak(heat)
        peak_dist.append(np.hypot(r + 0.5 - cy, c + 0.5 - cx))
        random_dist.append(np.hypot(rows + 0.5 - cy, cols + 0.5 - cx).mean())
    nearer = paired_mean_difference(peak_dist, random_dist, n_bootstrap=1000)
    assert nearer["ci"][1] < 0, nearer


def test_randomized_copy_keeps_the_architecture_and_forgets_the_weights():
    """Adebayo et al.'s model-randomisation check: same layers, new weights, original untouched."""
    from cxrlib import cam as cam_module
    from cxrlib.models import create_model

    model = create_model("resnet18", num_classes=14, pretrained=False).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    random = cam_module.randomized_copy(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is left as it was
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the trained model is untouched
    weights = [k for k, v in before.items() if v.dtype.is_floating_point and v.dim() > 1]
    assert all(not torch.equal(random.state_dict()[k], before[k]) for k in weights)
    again = cam_module.randomized_copy(model, seed=3)
    assert all(torch.equal(again.state_dict()[k], random.state_dict()[k]) for k in weights)  # seeded
    maps = cam_module.heatmaps_all_findings(random, torch.rand(1, 32, 32), classes=[0, 1])
    assert maps.shape == (2, 32, 32)
