"""Multi-label losses over logits ``[B, K]`` and 0/1 targets ``[B, K]``.

Every loss here treats the K outputs as K independent yes/no questions scored by
``sigmoid(logit)``, so AUROC and thresholds mean the same for all of them (the large-margin
loss below uses 0 as its threshold, which is ``sigmoid = 0.5``).

``create_loss(name, pos_weight=None, **options)`` builds one by name:

========================  ================================================================
``bce``                   binary cross-entropy with logits (optional ``pos_weight`` [K])
``weighted_bce``          class-balanced BCE: positives weighted by |N|/(|P|+|N|), negatives
                          by |P|/(|P|+|N|), per class, counted on the training set
                          (``pos_fraction`` or ``train_targets``). CheXNet (Rajpurkar et al.
                          2017) used this weighting for its binary pneumonia task; its
                          14-finding model optimised unweighted BCE (``bce``)
``focal``                 focal loss (Lin et al. 2017, ICCV): ``gamma``, ``alpha``
``asymmetric``            asymmetric loss (Ridnik et al. 2021, ICCV): ``gamma_neg``,
                          ``gamma_pos``, ``clip``
``multilabel_margin``     large-margin pairwise log-sum-exp with a zero threshold class:
                          ``margin``, ``scale`` (see :class:`MultiLabelMarginLoss`)
========================  ================================================================
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("bce", "weighted_bce", "focal", "asymmetric", "multilabel_margin")


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} and targets shape {tuple(targets.shape)} differ")


class BCELoss(nn.Module):
    """Mean binary cross-entropy with logits over all B*K entries."""

    def __init__(self, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        pw = None if self.pos_weight is None else self.pos_weight.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=pw)


def positive_fraction(train_targets: np.ndarray | torch.Tensor) -> np.ndarray:
    """Share of positives per class, |P|/(|P|+|N|), from training targets ``[N, K]``."""
    t = np.asarray(train_targets, dtype=np.float64)
    if t.ndim != 2 or len(t) == 0:
        raise ValueError(f"train_targets must be a non-empty [N, K] array, got shape {t.shape}")
    return (t > 0.5).mean(axis=0)


class WeightedBCELoss(nn.Module):
    """Class-balanced BCE: ``-w+ y log p - w- (1-y) log(1-p)``, w+ = |N|/(|P|+|N|), w- = |P|/(|P|+|N|).

    The weighting of Rajpurkar et al. 2017 (CheXNet, arXiv:1711.05225), section 2.2, for
    their binary pneumonia task, applied here per class; |P| and |N| are the positive and
    negative counts of each class in the training set. (CheXNet's 14-finding model used
    unweighted BCE.)
    """

    def __init__(self, pos_fraction: np.ndarray | torch.Tensor | list[float]):
        super().__init__()
        p = torch.as_tensor(np.asarray(pos_fraction, dtype=np.float64), dtype=torch.float32)
        if p.ndim != 1 or bool(((p < 0) | (p > 1)).any()):
            raise ValueError(f"pos_fraction must be a [K] vector of shares in [0, 1], got {p.tolist()}")
        self.register_buffer("w_pos", 1.0 - p)
        self.register_buffer("w_neg", p.clone())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        y = targets.to(logits.dtype)
        # logsigmoid keeps large logits finite where log(sigmoid) would give -inf
        loss = -(self.w_pos * y * F.logsigmoid(logits) + self.w_neg * (1 - y) * F.logsigmoid(-logits))
        return loss.mean()


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection").

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)``; ``alpha=None`` means no class weighting.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0 <= alpha <= 1:
            raise ValueError(f"focal alpha must be in [0, 1] or None, got {alpha}")
        self.gamma, self.alpha = float(gamma), alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        y = targets.to(logits.dtype)
        ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * y + (1 - p) * (1 - y)
        loss = ce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        return loss.mean()


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label Classification").

    Negatives are down-weighted harder (``gamma_neg`` > ``gamma_pos``) and their probability is
    shifted by ``clip`` so that very easy negatives contribute nothing; this suits the long
    negative tail of ChestX-ray14. Mean over entries (the paper sums; the scale only moves lr).
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        if gamma_neg < 0 or gamma_pos < 0 or not 0 <= clip < 1:
            raise ValueError(f"asymmetric loss needs gamma_neg, gamma_pos >= 0 and 0 <= clip < 1; got {gamma_neg}, {gamma_pos}, {clip}")
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = float(gamma_neg), float(gamma_pos), float(clip), float(eps)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        y = targets.to(logits.dtype)
        p = torch.sigmoid(logits)
        p_neg = 1 - p
        if self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1)  # probability shifting
        loss = y * torch.log(p.clamp(min=self.eps)) + (1 - y) * torch.log(p_neg.clamp(min=self.eps))
        p_t = p * y + p_neg * (1 - y)
        gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
        # the focusing weight is differentiated too, as in the reference implementation's default
        loss = loss * torch.pow(1 - p_t, gamma)
        return -loss.mean()


class MultiLabelMarginLoss(nn.Module):
    r"""Large-margin multi-label loss: pairwise log-sum-exp ranking against a zero threshold.

    For one image with positive set P and negative set N (either may be empty):

    .. math::
        L = \log\bigl(1 + \sum_{j \in N} e^{s (l_j + m)}\bigr)
          + \log\bigl(1 + \sum_{i \in P} e^{-s (l_i - m)}\bigr)

    This is the "multi-label categorical cross-entropy" / ZLPR loss (Su Jianlin 2020; Su et
    al. 2022, "ZLPR: A Novel Loss for Multi-label Classification", arXiv:2208.02955): a
    softmax-style log-sum-exp ranking of every positive above every negative (LSEP, Li et al.
    2017, "Improving Pairwise Ranking for Multi-label Image Classification"), with an extra
    zero-logit threshold class so that the decision threshold is 0 and images with no finding
    (P empty) or many findings work; plus an additive margin ``m`` and scale ``s`` as in
    CosFace / AM-softmax (Wang et al. 2018). Positives are pushed above +m and negatives below
    -m. The all-negative row reduces to the first term, the all-positive row to the second.
    Returns the mean over images, divided by ``s`` so its size does not grow with the scale.
    """

    def __init__(self, margin: float = 0.25, scale: float = 1.0):
        super().__init__()
        if margin < 0 or scale <= 0:
            raise ValueError(f"multilabel_margin needs margin >= 0 and scale > 0, got margin={margin}, scale={scale}")
        self.margin, self.scale = float(margin), float(scale)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        pos = targets > 0.5
        s, m = self.scale, self.margin
        neg_terms = (s * (logits + m)).masked_fill(pos, float("-inf"))
        pos_terms = (-s * (logits - m)).masked_fill(~pos, float("-inf"))
        zero = logits.new_zeros(logits.shape[0], 1)  # the threshold class: the "1 +" inside each log
        loss = torch.logsumexp(torch.cat([zero, neg_terms], 1), 1) + torch.logsumexp(torch.cat([zero, pos_terms], 1), 1)
        return loss.mean() / s


def create_loss(name: str, pos_weight: Any = None, **options: Any) -> nn.Module:
    """A loss module by name (see the module docstring); ``options`` are its keyword arguments.

    ``weighted_bce`` takes ``pos_fraction`` ([K] shares of positives) or ``train_targets``
    ([N, K]) to count them; ``pos_weight`` applies to ``bce`` only.
    """
    if name == "bce":
        if options:
            raise ValueError(f"loss 'bce' takes no options besides pos_weight, got {sorted(options)}")
        return BCELoss(pos_weight)
    if pos_weight is not None:
        raise ValueError(f"pos_weight applies to loss 'bce' only, not {name!r}")
    try:
        if name == "weighted_bce":
            if "train_targets" in options:
                options["pos_fraction"] = positive_fraction(options.pop("train_targets"))
            if "pos_fraction" not in options:
                raise ValueError("loss 'weighted_bce' needs pos_fraction or train_targets (training-set class counts)")
            return WeightedBCELoss(**options)
        if name == "focal":
            return FocalLoss(**options)
        if name == "asymmetric":
            return AsymmetricLoss(**options)
        if name == "multilabel_margin":
            return MultiLabelMarginLoss(**options)
    except TypeError as err:
        raise ValueError(f"bad options {sorted(options)} for loss {name!r}: {err}") from None
    raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")
