"""Losses: values against direct formulas, gradients, and the margin loss's edge cases."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrlib.losses import LOSSES, MultiLabelMarginLoss, create_loss, positive_fraction


def _batch(seed=0, b=6, k=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g), (torch.rand(b, k, generator=g) > 0.6).float()


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_finite_and_differentiable(name):
    logits, y = _batch()
    opts = {"train_targets": y.numpy()} if name == "weighted_bce" else {}
    loss_fn = create_loss(name, **opts)
    logits.requires_grad_(True)
    loss = loss_fn(logits * 30, y)  # large logits must not overflow
    loss.backward()
    assert torch.isfinite(loss) and loss.item() >= 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_bce_matches_torch():
    logits, y = _batch()
    assert torch.allclose(create_loss("bce")(logits, y), F.binary_cross_entropy_with_logits(logits, y))


def test_weighted_bce_is_chexnet_formula():
    logits, y = _batch(b=40)
    p = (y.numpy() > 0.5).mean(0)
    got = create_loss("weighted_bce", train_targets=y.numpy())(logits, y)
    prob = torch.sigmoid(logits).double()
    w_pos, w_neg = torch.tensor(1 - p), torch.tensor(p)
    want = -(w_pos * y * torch.log(prob) + w_neg * (1 - y) * torch.log(1 - prob)).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert np.allclose(positive_fraction(y.numpy()), p)


def test_focal_gamma0_is_bce_and_down_weights_easy():
    logits, y = _batch()
    assert torch.allclose(create_loss("focal", gamma=0.0)(logits, y), F.binary_cross_entropy_with_logits(logits, y))
    easy = torch.tensor([[5.0]]), torch.tensor([[1.0]])
    assert create_loss("focal", gamma=2.0)(*easy) < 0.01 * create_loss("bce")(*easy)


def test_asymmetric_no_focusing_no_clip_is_bce():
    logits, y = _batch()
    asl = create_loss("asymmetric", gamma_neg=0, gamma_pos=0, clip=0)
    assert asl(logits, y).item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, y).item(), rel=1e-5)
    # clip: a negative with probability below `clip` costs nothing
    assert create_loss("asymmetric", clip=0.05)(torch.tensor([[-4.0]]), torch.tensor([[0.0]])).item() == 0.0


def _margin_ref(l, y, m, s):
    out = []
    for li, yi in zip(l.tolist(), y.tolist()):
        neg = sum(math.exp(s * (v + m)) for v, t in zip(li, yi) if t < 0.5)
        pos = sum(math.exp(-s * (v - m)) for v, t in zip(li, yi) if t > 0.5)
        out.append((math.log1p(neg) + math.log1p(pos)) / s)
    return sum(out) / len(out)


def test_margin_loss_matches_formula_including_empty_and_full_rows():
    l = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -0.1], [-1.0, 2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.float64)  # mixed, none, all
    for m, s in [(0.0, 1.0), (0.25, 1.0), (0.5, 4.0)]:
        got = MultiLabelMarginLoss(margin=m, scale=s)(l, y).item()
        assert got == pytest.approx(_margin_ref(l, y, m, s), rel=1e-12)


def test_margin_loss_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    l = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: MultiLabelMarginLoss(0.3, 2.0)(x, y), (l,))


def test_margin_loss_edge_cases_and_direction():
    loss = MultiLabelMarginLoss(margin=0.25, scale=1.0)
    all_neg = torch.zeros(2, 3)
    all_pos = torch.ones(2, 3)
    very_low, very_high = torch.full((2, 3), -50.0), torch.full((2, 3), 50.0)
    # all-negative rows: low logits cost ~0, high logits cost a lot; all-positive rows the reverse
    assert loss(very_low, all_neg).item() < 1e-6 < loss(very_high, all_neg).item()
    assert loss(very_high, all_pos).item() < 1e-6 < loss(very_low, all_pos).item()
    for big in (1e4, -1e4):  # finite even when exp would overflow
        assert torch.isfinite(loss(torch.full((2, 3), big), torch.tensor([[1.0, 0, 1], [0, 0, 0]])))
    # raising a positive's logit lowers the loss; raising a negative's raises it
    l = torch.tensor([[0.0, 0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    up_pos, up_neg = l.clone(), l.clone()
    up_pos[0, 0] += 1
    up_neg[0, 1] += 1
    assert loss(up_pos, y) < loss(l, y) < loss(up_neg, y)
    # the margin matters: a positive at +0.1 is penalised more with margin 1 than without
    assert MultiLabelMarginLoss(1.0)(torch.tensor([[0.1]]), torch.tensor([[1.0]])) > MultiLabelMarginLoss(0.0)(
        torch.tensor([[0.1]]), torch.tensor([[1.0]]))


def test_single_class_k1():
    l, y = torch.randn(8, 1), (torch.arange(8) % 2).float()[:, None]
    for name in LOSSES:
        opts = {"train_targets": y.numpy()} if name == "weighted_bce" else {}
        assert torch.isfinite(create_loss(name, **opts)(l, y))


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="nope"):
        create_loss("nope")
    with pytest.raises(ValueError, match="pos_fraction"):
        create_loss("weighted_bce")
    with pytest.raises(ValueError, match="shape"):
        create_loss("bce")(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="gamma"):
        create_loss("focal", gamma=-1)
    with pytest.raises(ValueError, match="wrong"):
        create_loss("focal", wrong=1)
