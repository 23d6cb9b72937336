"""Training and evaluation as plain functions over an :class:`~cxrlib.config.ExperimentConfig`.

* :func:`fit` trains with CheXNet's recipe by default (Adam lr 1e-3; learning rate divided
  by 10 when the validation loss plateaus; early stopping on validation mean AUROC; the best
  weights are kept). On CUDA it uses mixed precision (bf16 where supported, else fp16 with a
  gradient scaler), channels_last, pinned memory and non-blocking copies; on CPU the same
  code runs without them. Under ``torchrun`` it uses DistributedDataParallel.
* Checkpoints (``last.pt`` every epoch and optionally every N steps, ``best.pt``) are written
  atomically and hold model, optimizer, scheduler, epoch, step, every RNG state and the
  config; an interrupted run resumes from ``last.pt`` and ends with the same weights as an
  uninterrupted one (on CPU).
* :func:`evaluate` scores a dataset (optionally ten-crop averaged) and returns the metrics
  and the predictions; :func:`run_experiment` is fit + test evaluation, writing the run
  folder through :mod:`cxrlib.runs` (which alone knows its files).

Scores are ``sigmoid(logits)`` for every loss.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from cxrlib import checkpoint as ckpt_io
from cxrlib import distributed, runs
from cxrlib import progress as progress_events  # named apart from fit's progress= flag
from cxrlib.config import ExperimentConfig
from cxrlib.data import load_data
from cxrlib.data.datasets import preprocess
from cxrlib.losses import create_loss
from cxrlib.metrics import auroc_report, mean_auroc
from cxrlib.models import create_model_from_config
from cxrlib.runs import RunResult
from cxrlib.seed import derive_seed, set_seed

# cxrlib.demo reads runs through these names; the run folder itself is cxrlib.runs'.
load_model, load_run = runs.load_model, runs.load_run

FAULT_ENV = "CXRLIB_FAULT_AT_STEP"  # test hook: the process dies (os._exit) after this optimizer step
CHECKPOINT_VERSION = 1


@dataclass
class FitResult:
    model: nn.Module
    history: pd.DataFrame
    run_dir: Path
    train_seconds: float


# --------------------------------------------------------------------------- helpers


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled per epoch from seed + epoch) that can skip batches already done.

    With one process it is simply a seeded per-epoch permutation; its order depends only on
    (seed, epoch), so a resumed epoch sees the same batches as the interrupted one.
    """

    skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return super().__len__() - self.skip


def make_loader(ds, batch_size, sampler, workers, pin, seed) -> DataLoader:
    """The engine's DataLoader: ``sampler`` order, ``workers`` processes, pinned memory if ``pin``."""
    # a private generator: creating the iterator must not draw from the global torch RNG,
    # or a run resumed mid-epoch would see different dropout masks than an uninterrupted one
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
                      generator=g, persistent_workers=False, drop_last=False)


def amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype | None, bool]:
    """(autocast on?, its dtype, gradient scaler needed?): bf16 where supported, else fp16 + scaler."""
    if device.type != "cuda" or not enabled:
        return False, None, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


def train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               amp: tuple[bool, torch.dtype | None, bool]) -> torch.Tensor:
    """One optimizer step (forward under autocast when ``amp[0]``, loss in float32, backward).

    ``fit`` and the throughput benchmarks call this same function, so a benchmark times
    exactly the engine's step. ``amp`` is what :func:`amp_settings` returns.
    """
    with torch.autocast(x.device.type, dtype=amp[1]) if amp[0] else nullcontext():
        logits = net(x)
    loss = loss_fn(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def with_channels(ds, channels: int):
    """``ds`` yielding ``channels``-channel images (a dataset that cannot change is returned as is)."""
    if hasattr(ds, "channels") and hasattr(ds, "with_channels") and ds.channels != channels:
        return ds.with_channels(channels)
    return ds


def _make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: expected adam, adamw or sgd")


def _make_scheduler(tc, optimizer, epochs: int):
    if tc.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=tc.plateau_factor,
                                                          patience=tc.plateau_patience)
    if tc.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if tc.scheduler == "none":
        return None
    raise ValueError(f"unknown scheduler {tc.scheduler!r}: expected plateau, cosine or none")


def _make_loss(tc, train_targets) -> nn.Module:
    options = dict(tc.loss_options or {})
    if tc.loss == "weighted_bce" and "pos_fraction" not in options:
        options["train_targets"] = np.asarray(train_targets)
    return create_loss(tc.loss, **options)


def _stage_plan(model: nn.Module, tc) -> list[tuple[str | None, int]]:
    stages = getattr(_unwrap(model), "stages", None)
    if not stages:
        return [(None, tc.epochs)]
    if tc.stage_epochs is not None:
        if len(tc.stage_epochs) != len(stages):
            raise ValueError(f"train.stage_epochs={tc.stage_epochs} has {len(tc.stage_epochs)} entries but the model "
                             f"has {len(stages)} stages {list(stages)}")
        return list(zip(stages, [int(e) for e in tc.stage_epochs]))
    return [(s, tc.epochs) for s in stages]


def _planned_done(plan: list[tuple[str | None, int]], state: "_State") -> int:
    """Epochs of the plan behind us: every earlier stage in full, and this stage's so far."""
    return sum(n for _, n in plan[:state.stage_index]) + state.stage_epoch


def batch_to_device(x: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    """A batch on ``device`` as the model takes it (channels_last for 4-D batches when asked)."""
    x = x.to(device, non_blocking=device.type == "cuda")
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def _predict(model: nn.Module, ds, batch_size: int, device, amp: tuple, channels_last: bool, workers: int = 0,
             progress: bool = False, desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Logits and probabilities for every item of ``ds`` in order (gathered over ranks).

    A ten-crop batch ``[B, 10, C, h, w]`` is scored crop by crop and the probabilities are
    averaged (CheXNet); its logits are the crops' mean logits.
    """
    info = distributed.current()
    sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=False)
    indices = np.fromiter(iter(sampler), dtype=np.int64)
    loader = make_loader(ds, batch_size, sampler, workers, device.type == "cuda", 0)
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    use_amp, amp_dtype, _ = amp
    logits_all, probs_all = [], []
    for x, _y in tqdm(loader, desc=desc, disable=not (progress and info.is_main), leave=False):
        crops = x.ndim == 5
        if crops:
            b, n = x.shape[:2]
            x = x.flatten(0, 1)
        x = batch_to_device(x, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
            out = net(x).float()
        if crops:
            out = out.view(b, n, -1)
            probs_all.append(torch.sigmoid(out).mean(1).cpu())
            logits_all.append(out.mean(1).cpu())
        else:
            probs_all.append(torch.sigmoid(out).cpu())
            logits_all.append(out.cpu())
    net.train(was_training)
    k = len(getattr(ds, "label_names", [])) or None
    logits = torch.cat(logits_all).numpy() if logits_all else np.zeros((0, k or 0), np.float32)
    probs = torch.cat(probs_all).numpy() if probs_all else np.zeros((0, k or 0), np.float32)
    n = len(ds)
    return distributed.gather_rows(indices, logits, n), distributed.gather_rows(indices, probs, n)


def _targets(ds) -> np.ndarray:
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets, dtype=np.float32)
    return np.stack([np.asarray(ds[i][1], dtype=np.float32) for i in range(len(ds))])


def _label_names(ds, k: int) -> list[str]:
    names = getattr(ds, "label_names", None)
    return list(names) if names is not None else [f"class_{i}" for i in range(k)]


def _load_data_rank0_first(cfg: ExperimentConfig, progress: bool):
    """load_data, with rank 0 building the cache while the other ranks wait, then open it."""
    info = distributed.current()
    data = load_data(cfg.data, progress=progress) if info.is_main else None
    distributed.barrier()
    return data if data is not None else load_data(cfg.data, progress=False)


# --------------------------------------------------------------------------- fit


@dataclass
class _State:
    """Everything of the loop that a resumed run must continue from."""

    stage_index: int = 0
    stage_epoch: int = 0  # epochs finished in the current stage
    epoch: int = 0  # epochs finished in all
    step: int = 0  # optimizer steps taken in all
    stage_start_step: int = 0  # value of ``step`` when the current stage began
    batch_in_epoch: int = 0  # batches of the current epoch already done (mid-epoch checkpoints)
    loss_sum: float = 0.0  # this epoch's training loss so far (sum over samples, this rank)
    loss_count: float = 0.0
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    train_seconds: float = 0.0
    done: bool = False
    stopped: bool = False  # max_steps reached in the current stage


def _checkpoint(run_dir: Path, model, optimizer, scheduler, scaler, state: _State, history, best_state, cfg,
                label_names) -> None:
    ckpt = {
        "version": CHECKPOINT_VERSION,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "state": dataclasses.asdict(state),
        "history": history,
        "best_model": best_state,
        "rng": ckpt_io.rng_state(),
        "config": cfg.to_dict(),
        "fingerprint": cfg.fingerprint(),
        "label_names": list(label_names),
    }
    runs.save_last(run_dir, ckpt)


def fit(cfg: ExperimentConfig, data=None, model: nn.Module | None = None, progress: bool = True,
        resume: bool = True, checkpoint_every: int | None = None) -> FitResult:
    """Train ``model`` (or the config's model) on ``data`` (or the config's data).

    ``data`` is anything with ``.train``, ``.val`` and ``.label_names`` (a DataBundle);
    datasets yield ``(image, target)``. A ``last.pt`` in the run folder with the same config
    fingerprint is resumed (``resume=False`` starts over); ``checkpoint_every`` also
    checkpoints every that many optimizer steps. Returns the model with its best weights.
    """
    tc = cfg.train
    info, device = distributed.setup(tc.device)
    if tc.threads:
        torch.set_num_threads(int(tc.threads))
    set_seed(cfg.seed)
    if data is None:
        data = _load_data_rank0_first(cfg, progress and info.is_main)
    train_ds = with_channels(data.train, cfg.model.in_chans)
    val_ds = with_channels(data.val, cfg.model.in_chans)
    if hasattr(train_ds, "augment"):
        train_ds.augment = bool(tc.augment)
    if hasattr(train_ds, "seed"):  # augmentation draws follow the training seed; the split, data.seed
        train_ds.seed = cfg.seed
    if hasattr(val_ds, "tencrop"):
        val_ds.tencrop = False
    label_names = list(data.label_names)
    if model is None:
        model = create_model_from_config(cfg.model, num_classes=len(label_names))
    if tc.batch_size % info.world_size:
        raise ValueError(f"train.batch_size={tc.batch_size} is the global batch and must divide by the "
                         f"{info.world_size} processes")
    rank_batch = tc.batch_size // info.world_size
    run_dir = runs.run_folder(cfg)

    amp = amp_settings(device, tc.amp)
    channels_last = device.type == "cuda" and tc.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if info.enabled and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN statistics over the global batch
    loss_fn = _make_loss(tc, _targets(train_ds)).to(device)
    plan = _stage_plan(model, tc)
    scaler = torch.amp.GradScaler("cuda", enabled=amp[2])

    state, history, best_state = _State(), [], None
    ckpt = runs.read_last(run_dir) if resume else None
    if ckpt is not None and ckpt.get("fingerprint") != cfg.fingerprint():
        if info.is_main:
            warnings.warn(f"{run_dir / runs.LAST} was written by a different config (fingerprint "
                          f"{ckpt.get('fingerprint')} != {cfg.fingerprint()}): starting over", stacklevel=2)
        ckpt = None
    if ckpt is not None:
        state = _State(**ckpt["state"])
        history = list(ckpt["history"])
        best_state = ckpt["best_model"]
        _unwrap(model).load_state_dict(ckpt["model"])
    total_epochs = sum(n for _, n in plan)
    if info.is_main:
        runs.write_config(run_dir, cfg)
        progress_events.emit("start", cfg.name, total=total_epochs, done=_planned_done(plan, state),
                             stages=[s for s, _ in plan if s])
    fault_at = int(os.environ.get(FAULT_ENV, "0") or 0)
    sampler = ResumableSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed)

    net: nn.Module = model
    optimizer = scheduler = None
    while not state.done:
        stage, n_epochs = plan[state.stage_index]
        if stage is not None:
            _unwrap(model).set_stage(stage)
        params = [p for p in _unwrap(model).parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {stage!r} of the model has no trainable parameters")
        optimizer = _make_optimizer(tc.optimizer, params, tc.lr, tc.weight_decay)
        scheduler = _make_scheduler(tc, optimizer, n_epochs)
        if ckpt is not None:  # resuming inside this stage: restore its optimizer and schedule
            if ckpt["optimizer"] is not None:
                optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None and ckpt["scheduler"] is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt["scaler"] is not None:
                scaler.load_state_dict(ckpt["scaler"])
        if info.enabled:
            net = nn.parallel.DistributedDataParallel(
                _unwrap(model), device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=stage is not None)
        else:
            net = _unwrap(model)
        if ckpt is not None:
            ckpt_io.set_rng_state(ckpt["rng"])  # last: nothing may draw between restore and training
            ckpt = None

        while state.stage_epoch < n_epochs and not state.stopped:
            t0 = time.perf_counter()
            sampler.set_epoch(state.epoch)
            sampler.skip = state.batch_in_epoch * rank_batch
            if hasattr(train_ds, "set_epoch"):
                train_ds.set_epoch(state.epoch)
            loader = make_loader(train_ds, rank_batch, sampler, tc.num_workers, device.type == "cuda",
                             derive_seed(cfg.seed, state.epoch))
            net.train()
            bar = tqdm(loader, desc=f"epoch {state.epoch + 1}" + (f" [{stage}]" if stage else ""),
                       disable=not (progress and info.is_main), leave=False)
            for x, y in bar:
                x = batch_to_device(x, device, channels_last)
                y = y.to(device, non_blocking=device.type == "cuda")
                loss = train_step(net, x, y, loss_fn, optimizer, scaler, amp)
                state.step += 1
                state.batch_in_epoch += 1
                state.loss_sum += float(loss.detach()) * len(y)
                state.loss_count += len(y)
                bar.set_postfix(loss=f"{state.loss_sum / state.loss_count:.4f}", refresh=False)
                if tc.max_steps is not None and state.step - state.stage_start_step >= tc.max_steps:
                    state.stopped = True
                    break
                if checkpoint_every and state.step % checkpoint_every == 0 and info.is_main:
                    state.train_seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    _checkpoint(run_dir, model, optimizer, scheduler, scaler, state, history, best_state, cfg,
                                label_names)
                if fault_at and state.step == fault_at:
                    os._exit(75)  # simulate a crash: no cleanup, no flush
            bar.close()
            # ---- end of epoch: validate on every rank (gathered predictions), then decide together
            loss_sum, loss_count = distributed.all_reduce_sum([state.loss_sum, state.loss_count], device)
            val_logits, val_probs = _predict(net, val_ds, max(rank_batch, 1) * 2, device, amp, channels_last,
                                             tc.num_workers, progress, "validate")
            val_y = _targets(val_ds)
            val_loss = float(loss_fn(torch.from_numpy(val_logits).to(device), torch.from_numpy(val_y).to(device)))
            val_auc = mean_auroc(val_y, val_probs, label_names)
            score = val_auc if math.isfinite(val_auc) else -val_loss  # no defined class: fall back on loss
            improved = score > state.best_score
            if improved:
                state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}
            else:
                state.bad_epochs += 1
            lr = optimizer.param_groups[0]["lr"]
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_loss)
            elif scheduler is not None:
                scheduler.step()
            state.train_seconds += time.perf_counter() - t0
            history.append({"epoch": state.epoch + 1, "stage": stage or "", "step": state.step, "lr": lr,
                            "train_loss": loss_sum / max(loss_count, 1), "val_loss": val_loss,
                            "val_mean_auroc": val_auc, "best": improved, "seconds": state.train_seconds})
            state.epoch += 1
            state.stage_epoch += 1
            state.batch_in_epoch, state.loss_sum, state.loss_count = 0, 0.0, 0.0
            stop_early = state.bad_epochs >= tc.early_stopping_patience
            if info.is_main:
                progress_events.emit("epoch", cfg.name, stage=stage, stage_index=state.stage_index,
                                     n_stages=len(plan), epoch=state.stage_epoch, epochs=n_epochs,
                                     done=_planned_done(plan, state), total=total_epochs, ran=state.epoch,
                                     step=state.step, seconds=state.train_seconds, val_mean_auroc=val_auc)
            if info.is_main and progress:
                print(f"epoch {state.epoch}{' [' + stage + ']' if stage else ''}: train loss "
                      f"{history[-1]['train_loss']:.4f}  val loss {val_loss:.4f}  val mean AUROC {val_auc:.4f}"
                      f"{'  *' if improved else ''}", flush=True)
            if stop_early or state.stopped:
                break
            if info.is_main:
                _checkpoint(run_dir, model, optimizer, scheduler, scaler, state, history, best_state, cfg,
                            label_names)
                runs.write_history(run_dir, history)
        # ---- end of stage: keep its best weights, then move on
        if best_state is not None:
            _unwrap(model).load_state_dict(best_state)
        if info.is_main and best_state is not None:
            runs.save_best(run_dir, best_state, cfg, label_names, epoch=state.best_epoch, score=state.best_score,
                           stage=stage)
        if state.stage_index + 1 >= len(plan):
            state.done = True
        else:  # max_steps caps each stage, so a capped staged run still trains every stage
            state.stage_index += 1
            state.stage_start_step, state.stopped = state.step, False
            state.stage_epoch, state.best_score, state.best_epoch, state.bad_epochs = 0, -math.inf, -1, 0
            best_state = None
        if info.is_main:
            # a new stage starts with a new optimizer and schedule: store none for it
            fresh = not state.done
            _checkpoint(run_dir, model, None if fresh else optimizer, None if fresh else scheduler, scaler, state,
                        history, best_state, cfg, label_names)
            runs.write_history(run_dir, history)
    distributed.barrier()
    model = _unwrap(model)
    return FitResult(model=model, history=pd.DataFrame(history), run_dir=run_dir,
                     train_seconds=state.train_seconds)


# --------------------------------------------------------------------------- evaluate


def evaluate(model: nn.Module, dataset, tta: str = "none", n_bootstrap: int = 1000, batch_size: int = 32,
             device: str | torch.device | None = None, progress: bool = False, seed: int = 0,
             num_workers: int = 0, amp: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score ``dataset`` with ``model``: (metrics dict, predictions dict).

    ``tta="tencrop"`` sets ``dataset.tencrop`` and averages the ten crops' probabilities.
    Metrics follow :func:`cxrlib.metrics.auroc_report` (patient-level bootstrap when the
    dataset has ``patient_ids``) plus ``tta``; predictions hold ``ids``, ``patient_ids``,
    ``targets``, ``scores`` and ``label_names``.
    """
    if tta not in ("none", "tencrop"):
        raise ValueError(f"unknown tta {tta!r}: expected none or tencrop")
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device) if not isinstance(device, torch.device) else device
    model = _unwrap(model).to(device)
    if tta == "tencrop" and not hasattr(dataset, "tencrop"):
        raise ValueError("tta='tencrop' needs a dataset with a .tencrop flag (cxrlib.data CachedDataset)")
    old = getattr(dataset, "tencrop", None)
    if old is not None:
        dataset.tencrop = tta == "tencrop"
    try:
        channels_last = device.type == "cuda"
        _, probs = _predict(model, dataset, batch_size, device, amp_settings(device, amp), channels_last,
                            num_workers, progress, "evaluate")
    finally:
        if old is not None:
            dataset.tencrop = old
    y = _targets(dataset)
    names = _label_names(dataset, y.shape[1])
    patient_ids = getattr(dataset, "patient_ids", None)
    metrics = auroc_report(y, probs, names, patient_ids=patient_ids, n_bootstrap=n_bootstrap, seed=seed)
    metrics["tta"] = tta
    ids = getattr(dataset, "image_ids", None)
    predictions = {
        "ids": np.asarray(ids if ids is not None else np.arange(len(y)).astype(str)),
        "patient_ids": np.asarray(patient_ids if patient_ids is not None else np.full(len(y), -1)),
        "targets": y,
        "scores": probs.astype(np.float32),
        "label_names": np.asarray(names),
    }
    return metrics, predictions


def run_experiment(cfg: ExperimentConfig, data=None, redo: bool = False, progress: bool = True,
                   model: nn.Module | None = None, checkpoint_every: int | None = None) -> RunResult:
    """Fit, then evaluate on the test split; reuse a finished run with the same fingerprint unless ``redo``."""
    run_dir = runs.run_folder(cfg)
    info, device = distributed.setup(cfg.train.device)  # under torchrun: join the group before deciding anything
    if not redo and runs.is_finished(run_dir, cfg):
        if info.is_main:
            progress_events.emit("reused", cfg.name)
        return runs.load_run(run_dir)
    if redo and info.is_main:
        runs.clear(run_dir)
    distributed.barrier()
    if data is None:
        data = _load_data_rank0_first(cfg, progress and info.is_main)
    result = fit(cfg, data=data, model=model, progress=progress, resume=not redo, checkpoint_every=checkpoint_every)
    test_ds = with_channels(data.test, cfg.model.in_chans)
    metrics, predictions = evaluate(result.model, test_ds, tta=cfg.train.tta, n_bootstrap=cfg.train.n_bootstrap,
                                    batch_size=max(cfg.train.batch_size, 1), device=device, progress=progress,
                                    seed=cfg.seed, num_workers=cfg.train.num_workers, amp=cfg.train.amp)
    if distributed.current().is_main:
        metrics = runs.write_evaluation(run_dir, cfg, data, metrics, predictions, result.train_seconds, result.model)
        progress_events.emit("finished", cfg.name, mean_auroc=metrics.get("mean_auroc"), split=metrics.get("split"))
    distributed.barrier()
    return RunResult(run_dir=run_dir, config=cfg, history=result.history, metrics=metrics, predictions=predictions,
                     train_seconds=result.train_seconds, model=result.model)


def predict_images(model: nn.Module, images_u8_list: Sequence[np.ndarray], image_size: int, channels: int,
                   batch_size: int = 32, device: str | torch.device | None = None) -> np.ndarray:
    """Probabilities ``[N, K]`` for uint8 grayscale images of any size (resized as the cache does)."""
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    model = _unwrap(model).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images_u8_list), batch_size):
            x = torch.stack([preprocess(np.asarray(im), image_size, channels) for im in images_u8_list[i:i + batch_size]])
            out.append(torch.sigmoid(model(x.to(device)).float()).cpu().numpy())
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out)
