"""The one heatmap overlay: resize, blend, ground truth (boxes and mask outlines) on top."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cxrlib import overlay

GREEN = (0, 255, 0)


def is_green(picture: np.ndarray) -> np.ndarray:
    return np.all(picture == GREEN, axis=-1)


def test_render_scales_large_images():
    image = np.zeros((3000, 2000), np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[0, 0] = 1.0
    picture = overlay.render(image, heat, max_side=1024)
    assert picture.shape == (1024, 683, 3) and picture.dtype == np.uint8
    assert picture[0, 0, 0] > picture[-1, -1, 0], "hot corner drawn red-ish"


def test_render_never_enlarges_and_keeps_full_resolution_without_a_cap():
    image = np.full((120, 100), 90, np.uint8)
    heat = np.zeros((7, 7), np.float32)
    assert overlay.render(image, heat).shape == (120, 100, 3)
    assert overlay.render(image, heat, max_side=4096).shape == (120, 100, 3)


def test_resize_heatmap_is_bilinear_to_the_full_shape_and_stays_in_range():
    heat = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    out = overlay.resize_heatmap(heat, (40, 30))
    assert out.shape == (40, 30) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out[0, -1] > 0.9 and out[0, 0] < 0.1  # corners keep their values
    assert 0.3 < out[20, 15] < 0.7  # the middle is a blend
    with pytest.raises(ValueError, match="2-D"):
        overlay.resize_heatmap(np.zeros((2, 2, 2)), (4, 4))


def test_blend_opacity_grows_with_heat():
    image = np.full((4, 4), 128, np.uint8)
    cold = overlay.blend(image, np.zeros((4, 4), np.float32))
    hot = overlay.blend(image, np.ones((4, 4), np.float32))
    # Cold: a faint tint of jet's dark blue, the gray still dominant; hot: jet's dark red at alpha.
    assert np.abs(cold.astype(int) - 128).max() <= 0.15 * 128 + 1
    assert int(hot[0, 0, 0]) - hot[0, 0, 1] > 50 and int(hot[0, 0, 0]) - hot[0, 0, 2] > 50
    weaker = overlay.blend(image, np.ones((4, 4), np.float32), alpha=0.2)
    assert abs(int(weaker[0, 0, 2]) - 128) < abs(int(hot[0, 0, 2]) - 128)
    with pytest.raises(ValueError, match="image's shape"):
        overlay.blend(image, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="colour map"):
        overlay.blend(image, np.zeros((4, 4), np.float32), cmap="no-such-map")


def test_non_uint8_images_are_stretched():
    ramp = np.linspace(-1.0, 3.0, 50 * 40).reshape(50, 40)
    gray = overlay.as_gray_u8(ramp)
    assert gray.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255
    with pytest.raises(ValueError, match="2-D gray"):
        overlay.render(np.zeros((5, 5, 3), np.uint8), np.zeros((2, 2)))


def test_boxes_objects_and_tuples_drawn_and_scaled():
    image = np.zeros((400, 300), np.uint8)
    heat = np.zeros((4, 4), np.float32)
    box = SimpleNamespace(finding="Nodule", x=100, y=200, w=50, h=40)
    picture = overlay.render(image, heat, boxes=[box, (10, 20, 30, 30)])
    assert is_green(picture)[200, 120] and is_green(picture)[220, 100]  # top and left edges
    assert is_green(picture)[20, 25] and not is_green(picture)[220, 125]  # inside stays clear
    half = overlay.render(image, heat, boxes=[box], max_side=200)
    assert half.shape == (200, 150, 3) and is_green(half)[100, 60] and not is_green(half)[200 - 1, 10]
    with pytest.raises(ValueError, match="x, y, w, h"):
        overlay.render(image, heat, boxes=["not a box"])


def test_masks_are_outlined_at_any_resolution():
    image = np.full((256, 256), 60, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:16] = True  # a mask at an eighth of the image's resolution
    picture = overlay.render(image, heat, masks=[mask])
    green = is_green(picture)
    line = overlay.line_width(picture.shape)
    assert green[64 + line // 2, 100]  # on the top edge (rows 64..192, cols 64..128)
    assert green[128, 64] and green[128, 127]  # left and right edges
    assert not green[128, 96], "the inside of the lesion is not painted"
    assert not green[30, 30] and not green[128, 140], "outside the lesion nothing is drawn"
    # One 2-D array is one mask; a mask at the picture's own size is drawn as it is.
    full = np.zeros((256, 256), bool)
    full[10:20, 10:20] = True
    np.testing.assert_array_equal(overlay.render(image, heat, masks=full),
                                  overlay.render(image, heat, masks=[full]))
    # A lesion at the border is closed along the image edge.
    edge = np.zeros((256, 256), bool)
    edge[:40, :40] = True
    assert is_green(overlay.render(image, heat, masks=[edge]))[0, 20]
    with pytest.raises(ValueError, match="2-D"):
        overlay.render(image, heat, masks=[np.zeros((2, 2, 2), bool)])


def test_draw_truth_leaves_its_input_alone():
    rgb = np.zeros((50, 50, 3), np.uint8)
    out = overlay.draw_truth(rgb, boxes=[(5, 5, 10, 10)], masks=[np.ones((50, 50), bool)])
    assert not rgb.any() and is_green(out).any()


@pytest.fixture(scope="module")
def phantom_bundle(tmp_path_factory):
    """The smoke profile's phantoms (they offer lesion masks, no boxes), cached in a temporary folder."""
    from cxrlib import profiles
    from cxrlib.data import load_data

    cache = tmp_path_factory.mktemp("phantom_cache")
    return load_data(profiles.load("smoke", overrides=[f"data.cache_dir={cache}"]).baseline.data, progress=False)


def test_a_heatmap_grid_outlines_the_phantoms_masks_in_their_finding_panel(phantom_bundle):
    """Phantoms give masks, not boxes: the example figure must outline them (it once drew boxes only)."""
    import matplotlib.pyplot as plt

    from cxrlib import plots
    from cxrlib.labels import FINDINGS

    data = phantom_bundle
    assert data.offers.masks and not data.offers.boxes
    image_id = next(str(i) for i in data.test.image_ids if data.masks(str(i)))
    masks = data.masks(image_id)
    row = list(map(str, data.test.image_ids)).index(image_id)
    positives = {FINDINGS[k] for k in np.flatnonzero(data.test.targets[row, : len(FINDINGS)] > 0)}
    assert set(masks) <= positives and all(m.dtype == bool and m.any() for m in masks.values())
    maps = np.zeros((len(FINDINGS), 4, 4), np.float32)  # flat maps: any green is ground truth
    fig = plots.heatmap_grid(data, image_id, maps, probabilities=np.zeros(len(FINDINGS)), ncols=7)
    try:
        for ax, name in zip(fig.axes, FINDINGS):
            green = is_green(np.asarray(ax.get_images()[0].get_array())).sum()
            assert (green > 0) == (name in masks), f"{name}: {green} green pixels, mask given: {name in masks}"
    finally:
        plt.close(fig)


def test_a_bundle_without_masks_gives_none():
    from cxrlib.data import DataBundle, Offers

    bundle = DataBundle.__new__(DataBundle)
    bundle.offers = Offers(masks=False, boxes=True, patient_ids=True, needs_data_dir=True)
    assert bundle.masks("00000001_000.png") == {}
