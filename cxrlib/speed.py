"""How fast a config trains on this device: a speed probe, and the wall time of a run.

:func:`speed_probe` times a few training steps and an inference pass of the config's model
on its device (random weights and inputs: speed does not depend on their values);
:func:`planned_steps` counts the optimizer steps a run plans and :func:`run_seconds` turns
both into the run's wall time. ``cxrlib check`` (:mod:`cxrlib.preflight`) adds these up per
notebook; the probe's :class:`Speed` is all it keeps.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from cxrlib.config import ExperimentConfig
from cxrlib.distributed import resolve_device
from cxrlib.models import create_model_from_config
from cxrlib.train import amp_settings, make_optimizer, train_step

# Ten-crop evaluation runs ten forward passes per image.
TENCROP_VIEWS = 10


@dataclass(frozen=True)
class Speed:
    """Measured cost on one device: a training step takes ``step_s + image_s x batch``
    seconds (a fixed part, the optimizer update and per-layer overheads, and a part per
    image); inference takes ``eval_image_s`` per image."""

    step_s: float
    image_s: float
    eval_image_s: float
    batches: tuple[int, ...]  # the batch sizes the probe ran
    peak_memory: int | None = None  # bytes at the largest probed batch (CUDA only)
    device: str = "cpu"  # the device type probed

    def train_step_s(self, batch: int) -> float:
        return self.step_s + self.image_s * batch


def speed_key(cfg: ExperimentConfig) -> str:
    """What a config's speed depends on: two configs with one key are probed once."""
    m = cfg.model
    # Not the loss or the label count (a 14- or 15-way classifier): they cost next to nothing.
    return json.dumps([m.name, m.head, m.wrapper, m.in_chans, m.options, cfg.data.image_size, cfg.train.device,
                       cfg.train.batch_size, cfg.train.amp, cfg.train.channels_last, cfg.train.optimizer,
                       cfg.train.threads], sort_keys=True, default=str)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def speed_probe(cfg: ExperimentConfig, batches: Sequence[int] | None = None, steps: int | None = None) -> Speed:
    """Time training steps and an inference pass of ``cfg``'s model on its device.

    Random weights and random inputs of the real size (speed does not depend on their
    values), the profile's optimizer, AMP and memory format; for each probed batch size one
    warm-up step (allocation, cuDNN autotuning) and the fastest of ``steps`` timed ones. On
    CUDA the profile's own batch, 3 steps. On a CPU, to stay within seconds, batches of 2 and
    8 and 2 steps each: a line through them gives the fixed and the per-image cost of a step,
    which extrapolate to the profile's batch (a step's time is close to linear in the batch
    on a CPU; a per-image rate from a tiny batch alone overestimates by about 2x, as the
    optimizer update is paid once per step). ``train.threads`` applies as in training.
    Not timed: data loading and the batched augmentation (the loop keeps the device fed),
    and ``torch.compile`` (the probe runs eagerly; a compiled run pays a warm-up, then its
    steps are usually faster than these).
    """
    threads = torch.get_num_threads()
    if cfg.train.threads:  # as fit runs it
        torch.set_num_threads(int(cfg.train.threads))
    try:
        return _measure(cfg, batches, steps)
    finally:
        torch.set_num_threads(threads)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next probe's model gets the whole GPU


def _measure(cfg: ExperimentConfig, batches: Sequence[int] | None, steps: int | None) -> Speed:
    dev = resolve_device(cfg.train.device)
    cuda = dev.type == "cuda"
    batch = int(cfg.train.batch_size)
    if batches is None:
        batches = [batch] if cuda else sorted({min(2, batch), min(8, batch)})
    steps = int(steps or (3 if cuda else 2))
    size, in_chans = int(cfg.data.image_size), int(cfg.model.in_chans)
    num_classes = 15 if cfg.data.include_no_finding else 14
    torch.manual_seed(0)
    model_cfg = dataclasses.replace(cfg.model, pretrained=False, weights_path=None)
    model: nn.Module = create_model_from_config(model_cfg, num_classes).to(dev)
    channels_last = cuda and cfg.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = amp_settings(dev, cfg.train.amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp[2])
    loss_fn = nn.BCEWithLogitsLoss()  # any loss: its cost is nothing next to the network's
    optimizer = make_optimizer(cfg.train.optimizer, [p for p in model.parameters() if p.requires_grad],
                               cfg.train.lr, cfg.train.weight_decay, fused=cuda)  # as fit makes it
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    times: dict[int, float] = {}
    for b in batches:
        x = torch.randn(int(b), in_chans, size, size, device=dev)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = (torch.rand(int(b), num_classes, device=dev) < 0.5).float()
        model.train()
        train_step(model, x, y, loss_fn, optimizer, scaler, amp)  # warm-up: allocation, cuDNN autotuning
        _sync(dev)
        timed = []
        for _ in range(steps):
            t0 = time.perf_counter()
            train_step(model, x, y, loss_fn, optimizer, scaler, amp)
            _sync(dev)
            timed.append(time.perf_counter() - t0)
        # The fastest step: other processes only ever add time (timeit's advice).
        times[int(b)] = min(timed)
    model.eval()
    with torch.no_grad(), (torch.autocast(dev.type, dtype=amp[1]) if amp[0] else contextlib.nullcontext()):
        model(x)
        _sync(dev)
        t0 = time.perf_counter()
        model(x)
        _sync(dev)
        eval_s = (time.perf_counter() - t0) / len(x)
    peak = int(torch.cuda.max_memory_allocated(dev)) if cuda else None
    step_s, image_s = _fit_line(times)
    return Speed(step_s, image_s, eval_s, tuple(times), peak, dev.type)


def _fit_line(times: Mapping[int, float]) -> tuple[float, float]:
    """(fixed seconds per step, seconds per image) through the probed batch sizes; one batch
    size gives a line through the origin (exact at that batch, the profile's own on CUDA)."""
    if len(times) == 1:
        (b, t), = times.items()
        return 0.0, t / b
    (b1, t1), (b2, t2) = sorted(times.items())[0], sorted(times.items())[-1]
    # Timing noise can tilt the line; neither part of a step can be negative.
    image_s = min(max((t2 - t1) / (b2 - b1), 0.0), t2 / b2)
    return max(t2 - image_s * b2, 0.0), image_s


def planned_steps(cfg: ExperimentConfig, n_train: int) -> tuple[int, int]:
    """(optimizer steps, epochs validated) a run plans: epochs x batches per epoch, each
    stage capped at ``max_steps``. Early stopping can only make it fewer."""
    t = cfg.train
    per_epoch = max(1, math.ceil(n_train / t.batch_size))
    stages = list(t.stage_epochs) if t.stage_epochs else [t.epochs]
    steps = epochs = 0
    for e in stages:
        s = e * per_epoch if t.max_steps is None else min(e * per_epoch, int(t.max_steps))
        steps += s
        epochs += math.ceil(s / per_epoch)
    return steps, epochs


def run_seconds(cfg: ExperimentConfig, speed: Speed, n_train: int, n_val: int, n_test: int) -> float:
    """Wall time of one run, from :func:`planned_steps` and the probe's :class:`Speed`::

        steps x (step_s + image_s x batch) + (epochs x n_val + n_test x views) x eval_image_s

    (``views`` is 10 under ten-crop, else 1). Not counted: building the image cache (once
    per size), data loading, bootstrap intervals and heatmaps.
    """
    steps, epochs = planned_steps(cfg, n_train)
    views = TENCROP_VIEWS if cfg.train.tta == "tencrop" else 1
    return (steps * speed.train_step_s(cfg.train.batch_size) + epochs * n_val * speed.eval_image_s
            + n_test * views * speed.eval_image_s)
