"""What a two-stage (AG-CNN) model's global branch chooses to look at: the crops in a figure
and in numbers. Apart from :mod:`cxrlib.plots` because these run a model (torch), while the
plots there take plain arrays."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch


def plot_attention_crops(model, dataset, indices: Sequence[int], panel: float = 2.4):
    """What a two-stage (AG-CNN) model's global branch chose to look at, one row per image:
    the input with the attention map and the crop box, the region above the threshold, and
    the crop as the local branch reads it (enlarged to fill its input).

    ``model`` needs ``attention(x) -> (map [B,H,W] in [0, 1], boxes [B,4])`` and ``tau`` (a
    ``two_stage`` model); ``dataset[i]`` gives the model's input ``[C,H,W]``.
    """
    from matplotlib.figure import Figure  # not pyplot: the figure shows where it is displayed, once
    from matplotlib.patches import Rectangle

    if not (hasattr(model, "attention") and hasattr(model, "tau")):
        raise ValueError(f"plot_attention_crops needs a two-stage model (model.wrapper: two_stage), "
                         f"got {type(model).__name__}")
    idx = list(indices)
    if not idx:
        raise ValueError("plot_attention_crops needs at least one image index")
    param = next(model.parameters())
    x = torch.stack([dataset[i][0] for i in idx]).to(device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()  # in train mode the forward pass would move BatchNorm's running statistics
    try:
        heat, boxes = model.attention(x)
    finally:
        model.train(was_training)
    heat, boxes = heat.cpu().numpy(), boxes.cpu().numpy()
    names = list(dataset.label_names)
    fig = Figure(figsize=(3 * panel, panel * len(idx) + 0.4), layout="constrained")
    axes = fig.subplots(len(idx), 3, squeeze=False)
    for row, i in enumerate(idx):
        img = x[row, 0].float().cpu().numpy()
        x0, y0, x1, y1 = (int(v) for v in boxes[row])
        labels = [names[k] for k in np.flatnonzero(np.asarray(dataset.targets[i]) > 0)] or ["No Finding"]
        ax = axes[row, 0]
        ax.imshow(img, cmap="gray")
        ax.imshow(heat[row], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.5))
        ax.set_title(f"{dataset.image_ids[i]}: {', '.join(labels[:3])}", fontsize=7)
        axes[row, 1].imshow(heat[row] >= model.tau, cmap="gray", vmin=0, vmax=1)
        axes[row, 1].set_title(f"attention >= {model.tau:g} x its maximum", fontsize=7)
        axes[row, 2].imshow(img[y0:y1, x0:x1], cmap="gray")
        axes[row, 2].set_title(f"crop {x1 - x0} x {y1 - y0} px of {img.shape[1]} x {img.shape[0]}", fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])  # the frame stays: a region covering the whole image is all white
    return fig


def attention_crop_sizes(model, dataset, batch_size: int = 64):
    """How much of the image a two-stage model's crops keep, over all of ``dataset``: one row
    with the share of crops that are the whole image, the mean and median share of the image
    a crop covers, and the grid the attention is read on (a model as for
    :func:`plot_attention_crops`)."""
    if not hasattr(model, "attention"):
        raise ValueError(f"attention_crop_sizes needs a two-stage model (model.wrapper: two_stage), "
                         f"got {type(model).__name__}")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    shares = []
    try:
        for a in range(0, len(dataset), batch_size):
            x = torch.stack([dataset[i][0] for i in range(a, min(a + batch_size, len(dataset)))])
            _, boxes = model.attention(x.to(device=param.device, dtype=param.dtype))
            b = boxes.cpu().numpy().astype(float)
            shares.append((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (x.shape[-1] * x.shape[-2]))
    finally:
        model.train(was_training)
    share = np.concatenate(shares)
    return pd.DataFrame([{"images": len(share), "attention layer": getattr(model, "attention_layer", "C5"),
                          "tau": model.tau, "whole-image crops": float(np.mean(share >= 1)),
                          "mean crop area": float(share.mean()), "median crop area": float(np.median(share))}])
