"""Bilinear resizing of feature maps whose backward is deterministic on CUDA.

``F.interpolate(mode="bilinear")`` accumulates its gradient with atomic adds on CUDA, so
two runs under ``train.deterministic`` still differ (torch has no deterministic kernel for
it and only warns). The same resize is a product with two small interpolation matrices,
``A_h @ x @ A_w^T``, whose backward is two matmuls: deterministic with cuBLAS's fixed
workspace. It is used only where it is needed (deterministic algorithms on, a CUDA tensor
that takes part in the backward); everywhere else the fused kernel is faster.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def interpolation_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[n_out, n_in]`` weights of a bilinear resize with ``align_corners=False`` (PyTorch's rule:
    source coordinate ``(o + 0.5) * n_in / n_out - 0.5``, clamped at 0 and at the last pixel)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m.to(device=device, dtype=dtype)


def resize_bilinear(x: torch.Tensor, size, exact_backward: bool | None = None) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for ``[B, C, H, W]``.

    ``exact_backward`` (default: deterministic algorithms are on and ``x`` is a CUDA tensor
    that needs a gradient) computes it as two matmuls, whose backward is deterministic.
    """
    size = tuple(int(s) for s in size)
    if exact_backward is None:
        exact_backward = torch.are_deterministic_algorithms_enabled() and x.is_cuda and x.requires_grad
    if not exact_backward:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    a_h = interpolation_matrix(x.shape[-2], size[0], x.device, x.dtype)
    a_w = interpolation_matrix(x.shape[-1], size[1], x.device, x.dtype)
    return torch.einsum("oh,bchw,pw->bcop", a_h, x, a_w)
