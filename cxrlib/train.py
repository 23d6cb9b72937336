"""Training and evaluation as plain functions over an :class:`~cxrlib.config.ExperimentConfig`.

* :func:`fit` trains with CheXNet's recipe by default (Adam lr 1e-3; learning rate divided
  by 10 when the validation loss plateaus; early stopping on validation mean AUROC; the best
  weights are kept). Batches come from :class:`cxrlib.feed.Feed`: uint8 images sliced from a
  resident copy of the dataset (or streamed by persistent workers) and augmented on the
  device, a batch at a time. On CUDA it uses mixed precision (bf16 where supported, else
  fp16 with a gradient scaler), channels_last, fused optimizers, cuDNN autotuning and TF32
  (unless ``train.deterministic``) and, by default, ``torch.compile``; on CPU the same code
  runs without them. Under ``torchrun`` it uses DistributedDataParallel.
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
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from cxrlib import checkpoint as ckpt_io
from cxrlib import distributed, runs
from cxrlib import progress as progress_events  # named apart from fit's progress= flag
from cxrlib.config import ExperimentConfig, TrainConfig
from cxrlib.data import load_data
from cxrlib.feed import Feed
from cxrlib.losses import create_loss
from cxrlib.metrics import auroc_report, mean_auroc
from cxrlib.models import create_model_from_config
from cxrlib.runs import RunResult
from cxrlib.seed import select_kernels, set_seed

FAULT_ENV = "CXRLIB_FAULT_AT_STEP"  # test hook: the process dies (os._exit) after this optimizer step
CHECKPOINT_VERSION = 1


@dataclass
class FitResult:
    model: nn.Module
    history: pd.DataFrame
    run_dir: Path
    train_seconds: float
    reused_stages: dict[str, str] = dataclasses.field(default_factory=dict)  # stage -> run folder it came from


# --------------------------------------------------------------------------- helpers


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


def make_optimizer(name: str, params, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``fit`` uses; ``fused`` (CUDA): one kernel for all parameters instead of several per tensor."""
    fused = bool(fused) or None  # None: torch's default implementation
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}: expected adam, adamw or sgd")


def compile_enabled(setting, device: torch.device) -> bool:
    """``train.compile``: ``auto`` compiles on CUDA only (on the CPU inductor's C++ build takes
    minutes, longer than a CPU run trains), ``true`` and ``false`` decide everywhere."""
    if setting == "auto":
        return device.type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"train.compile={setting!r}: expected auto, true or false")


class _Stepper:
    """``train_step`` through ``torch.compile(net)`` when asked, else through ``net``.

    Compilation happens at the first step (and again for a new batch shape). If it fails under
    ``compile=auto``, the run warns and goes on uncompiled: the failure comes before the
    optimizer step, and the eager step starts by clearing the gradients, so nothing of the
    failed attempt remains. Under ``compile=true`` it stops with the reason.
    """

    def __init__(self, net: nn.Module, setting, device: torch.device):
        self.net, self.setting = net, setting
        self.compiled = torch.compile(net) if compile_enabled(setting, device) else None

    def __call__(self, x, y, loss_fn, optimizer, scaler, amp) -> torch.Tensor:
        if self.compiled is None:
            return train_step(self.net, x, y, loss_fn, optimizer, scaler, amp)
        try:
            loss = train_step(self.compiled, x, y, loss_fn, optimizer, scaler, amp)
        except Exception as e:  # whatever the compiler raises: its backends have no common error type
            if self.setting is True:
                raise RuntimeError(f"torch.compile failed ({type(e).__name__}: {e}); set train.compile=false to "
                                   f"train without it") from e
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:300]}); training without it "
                          f"(set train.compile=false to skip the attempt)", stacklevel=3)
            self.compiled = None
            return train_step(self.net, x, y, loss_fn, optimizer, scaler, amp)
        return loss


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


def _feed(ds, batch_size: int, device: torch.device, tc, shuffle: bool = False, seed: int = 0,
          tencrop: bool = False) -> Feed:
    """This rank's batches of ``ds``, placed and streamed as ``tc`` (a TrainConfig) says."""
    info = distributed.current()
    return Feed(ds, batch_size, device, shuffle=shuffle, seed=seed, rank=info.rank, world=info.world_size,
                channels_last=device.type == "cuda" and tc.channels_last, tencrop=tencrop, workers=tc.num_workers,
                resident=tc.resident, budget_gb=tc.resident_gb)


@torch.no_grad()
def _predict(model: nn.Module, feed: Feed, amp: tuple, progress: bool = False,
             desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Logits and probabilities for every sample of ``feed.ds`` in order (gathered over ranks).

    With ten crops the probabilities of an image's crops are averaged (CheXNet); its logits
    are the crops' mean logits.
    """
    info = distributed.current()
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    use_amp, amp_dtype, _ = amp
    logits_all, probs_all = [], []
    for x, y in tqdm(feed.epoch(0), total=len(feed), desc=desc, disable=not (progress and info.is_main),
                     leave=False):
        with torch.autocast(x.device.type, dtype=amp_dtype) if use_amp else nullcontext():
            out = net(x).float()
        out = out.view(len(y), -1, out.shape[-1])  # [B, crops, K]; one crop without ten-crop
        probs_all.append(torch.sigmoid(out).mean(1))
        logits_all.append(out.mean(1))
    net.train(was_training)
    k = len(feed.ds.label_names)
    # kept on the device until here: one copy back, not one sync per batch
    logits = torch.cat(logits_all).cpu().numpy() if logits_all else np.zeros((0, k), np.float32)
    probs = torch.cat(probs_all).cpu().numpy() if probs_all else np.zeros((0, k), np.float32)
    indices, n = feed.indices(0), len(feed.ds)
    return distributed.gather_rows(indices, logits, n), distributed.gather_rows(indices, probs, n)


def _targets(ds) -> np.ndarray:
    return np.asarray(ds.targets, dtype=np.float32)


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
    reused_stages: dict = dataclasses.field(default_factory=dict)  # stage -> the finished run it came from


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


# ------------------------------------------------------------ a two-stage run's global stage

def global_stage_equivalent(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The plain (unwrapped) config whose training *is* the global stage of the two_stage run
    ``cfg``: same data, backbone, head, seed and training settings, for the global stage's
    epochs. None when ``cfg`` is not two_stage or its global branch reads a resized input.

    AG-CNN trains its global branch first, alone, on whole images: exactly the baseline. So a
    finished baseline run trained this way supplies the global stage (:func:`_reuse_global_stage`)
    instead of training it a second time; ``tests/test_train.py`` checks that the two_stage run
    then ends with the same predictions as when it trains every stage itself.
    """
    if cfg.model.wrapper != "two_stage" or cfg.model.options.get("global_size"):
        return None
    d = cfg.to_dict()
    options = {k: v for k, v in d["model"]["options"].items() if k not in ("tau", "global_size", "local_size")}
    stage_epochs = cfg.train.stage_epochs
    d["model"].update(wrapper=None, options=options)
    d["train"].update(stage_epochs=None, epochs=int(stage_epochs[0]) if stage_epochs else cfg.train.epochs)
    return ExperimentConfig.from_dict(d)


def _finished_global_stage(cfg: ExperimentConfig) -> Path | None:
    """A finished run under ``cfg.runs_dir``, of any name, that trained ``cfg``'s global stage."""
    want = global_stage_equivalent(cfg)
    if want is None:
        return None
    key = want.training_key()
    for run_dirs in runs.experiment_runs(cfg.runs_dir).values():
        for run_dir in run_dirs:
            try:
                other = runs.load_config(run_dir)
            except (OSError, ValueError):
                continue  # not a run this code can read: it cannot be the one
            has_weights = runs.is_finished(run_dir, other) and (Path(run_dir) / runs.BEST).is_file()
            if has_weights and other.training_key() == key:
                return Path(run_dir)
    return None


def _reuse_global_stage(cfg: ExperimentConfig, model: nn.Module, plan) -> tuple[_State, list[dict], Path] | None:
    """Load the global branch of a two_stage ``model`` from a finished run that trained it
    (:func:`global_stage_equivalent`); returns the loop's state and history after the global
    stage, as if it had just been trained here, or None when no such run is finished."""
    if not plan or plan[0][0] != "global":
        return None
    source = _finished_global_stage(cfg)
    frame = runs.read_history(source) if source is not None else None
    if frame is None:  # nothing to take, or a run without its epochs: train the stage here
        return None
    weights = ckpt_io.load(source / runs.BEST)["model"]
    net = _unwrap(model)
    for part, prefix in ((net.global_branch, "branch."), (net.global_classifier, "classifier.")):
        part.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    history = frame.assign(stage="global").to_dict("records")
    metrics = runs.read_metrics(source) or {}
    step = int(history[-1]["step"]) if history else 0
    state = _State(stage_index=1, epoch=len(history), step=step, stage_start_step=step,
                   train_seconds=float(metrics.get("train_seconds", 0.0)), done=len(plan) == 1,
                   reused_stages={"global": str(source)})
    return state, history, source


def fit(cfg: ExperimentConfig, data=None, model: nn.Module | None = None, progress: bool = True,
        resume: bool = True, checkpoint_every: int | None = None) -> FitResult:
    """Train ``model`` (or the config's model) on ``data`` (or the config's data).

    ``data`` is anything with ``.train``, ``.val`` and ``.label_names`` (a DataBundle);
    its datasets hand out uint8 batches (:class:`~cxrlib.data.CachedDataset`; arrays in memory
    through ``CachedDataset.from_arrays``). A ``last.pt`` in the run folder with the same config
    fingerprint is resumed (``resume=False`` starts over); ``checkpoint_every`` also
    checkpoints every that many optimizer steps. Returns the model with its best weights.
    """
    cfg.validate()  # every name and size, before a device, a process group or the data is touched
    tc = cfg.train
    info, device = distributed.setup(tc.device)
    if tc.threads:
        torch.set_num_threads(int(tc.threads))
    set_seed(cfg.seed, deterministic=False)  # kernels are chosen below, for CUDA only
    if device.type == "cuda":
        select_kernels(tc.deterministic)  # when determinism is asked for, it wins over speed
    compile_enabled(tc.compile, device)  # a bad value fails now, not after the data is loaded
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
    if ckpt is None:
        reused = _reuse_global_stage(cfg, model, plan)
        if reused is not None:
            state, history, source = reused
            if progress and info.is_main:
                print(f"global stage: the finished run {source} trained it exactly so; its weights are used")
    total_epochs = sum(n for _, n in plan)
    if info.is_main:
        runs.write_config(run_dir, cfg)
        progress_events.emit("start", runs.run_label(cfg), total=total_epochs, done=_planned_done(plan, state),
                             stages=[s for s, _ in plan if s])
    fault_at = int(os.environ.get(FAULT_ENV, "0") or 0)
    # one order per epoch from (seed, epoch) for every rank; images resident or streamed
    train_feed = _feed(train_ds, rank_batch, device, tc, shuffle=True, seed=cfg.seed)
    val_feed = _feed(val_ds, max(rank_batch, 1) * 2, device, tc)

    net: nn.Module = model
    optimizer = scheduler = None
    while not state.done:
        stage, n_epochs = plan[state.stage_index]
        if stage is not None:
            _unwrap(model).set_stage(stage)
        params = [p for p in _unwrap(model).parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {stage!r} of the model has no trainable parameters")
        optimizer = make_optimizer(tc.optimizer, params, tc.lr, tc.weight_decay, fused=device.type == "cuda")
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
        stepper = _Stepper(net, tc.compile, device)  # compiled per stage: a stage changes what trains
        if ckpt is not None:
            ckpt_io.set_rng_state(ckpt["rng"])  # last: nothing may draw between restore and training
            ckpt = None

        while state.stage_epoch < n_epochs and not state.stopped:
            t0 = time.perf_counter()
            net.train()
            skip = state.batch_in_epoch  # a run resumed mid-epoch goes on with the batches it had left
            bar = tqdm(train_feed.epoch(state.epoch, skip), total=len(train_feed) - skip,
                       desc=f"epoch {state.epoch + 1}" + (f" [{stage}]" if stage else ""),
                       disable=not (progress and info.is_main), leave=False)
            # the epoch's loss is summed on the device (float64, in the same order as a Python
            # float would be) and read back only at checkpoints: reading it every step would
            # make the CPU wait for the GPU and leave the GPU idle while the next step is queued
            epoch_loss = torch.tensor(state.loss_sum, dtype=torch.float64, device=device)
            for x, y in bar:
                loss = stepper(x, y, loss_fn, optimizer, scaler, amp)
                state.step += 1
                state.batch_in_epoch += 1
                epoch_loss += loss.detach().double() * len(y)
                state.loss_count += len(y)
                if not bar.disable and state.batch_in_epoch % 20 == 0:
                    bar.set_postfix(loss=f"{float(epoch_loss) / state.loss_count:.4f}", refresh=False)
                if tc.max_steps is not None and state.step - state.stage_start_step >= tc.max_steps:
                    state.stopped = True
                    break
                if checkpoint_every and state.step % checkpoint_every == 0 and info.is_main:
                    state.train_seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    state.loss_sum = float(epoch_loss)
                    _checkpoint(run_dir, model, optimizer, scheduler, scaler, state, history, best_state, cfg,
                                label_names)
                if fault_at and state.step == fault_at:
                    os._exit(75)  # simulate a crash: no cleanup, no flush
            bar.close()
            state.loss_sum = float(epoch_loss)
            # ---- end of epoch: validate on every rank (gathered predictions), then decide together
            loss_sum, loss_count = distributed.all_reduce_sum([state.loss_sum, state.loss_count], device)
            val_logits, val_probs = _predict(net, val_feed, amp, progress, "validate")
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
                progress_events.emit("epoch", runs.run_label(cfg), stage=stage, stage_index=state.stage_index,
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
    train_feed.close()
    val_feed.close()
    distributed.barrier()
    model = _unwrap(model)
    return FitResult(model=model, history=pd.DataFrame(history), run_dir=run_dir,
                     train_seconds=state.train_seconds, reused_stages=dict(state.reused_stages))


# --------------------------------------------------------------------------- evaluate


def evaluate(model: nn.Module, dataset, tta: str = "none", n_bootstrap: int = 1000, batch_size: int = 32,
             device: str | torch.device | None = None, progress: bool = False, seed: int = 0,
             num_workers: int = 0, amp: bool = True, resident: str = TrainConfig.resident,
             resident_gb: float = TrainConfig.resident_gb) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score ``dataset`` with ``model``: (metrics dict, predictions dict).

    ``tta="tencrop"`` averages the probabilities of ten crops per image, cropped from the
    batch on the device. ``num_workers``, ``resident`` and ``resident_gb`` say where the
    images come from (see :class:`cxrlib.feed.Feed`). Metrics follow :func:`cxrlib.metrics.auroc_report` (patient-level bootstrap when the
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
    options = TrainConfig(num_workers=num_workers, resident=resident, resident_gb=resident_gb)
    feed = _feed(dataset, batch_size, device, options, tencrop=tta == "tencrop")
    try:
        _, probs = _predict(model, feed, amp_settings(device, amp), progress, "evaluate")
    finally:
        feed.close()
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
            progress_events.emit("reused", runs.run_label(cfg))
        return runs.load_run(run_dir)
    if redo and info.is_main:
        runs.clear(run_dir)
    distributed.barrier()
    if data is None:
        data = _load_data_rank0_first(cfg, progress and info.is_main)
    result = fit(cfg, data=data, model=model, progress=progress, resume=not redo, checkpoint_every=checkpoint_every)
    test_ds = with_channels(data.test, cfg.model.in_chans)
    tc = cfg.train
    metrics, predictions = evaluate(result.model, test_ds, tta=tc.tta, n_bootstrap=tc.n_bootstrap,
                                    batch_size=max(tc.batch_size, 1), device=device, progress=progress,
                                    seed=cfg.seed, num_workers=tc.num_workers, amp=tc.amp, resident=tc.resident,
                                    resident_gb=tc.resident_gb)
    if result.reused_stages:  # where a stage's weights came from, kept with the run
        metrics = {**metrics, "reused_stages": result.reused_stages}
    if distributed.current().is_main:
        metrics = runs.write_evaluation(run_dir, cfg, data, metrics, predictions, result.train_seconds, result.model)
        progress_events.emit("finished", runs.run_label(cfg), mean_auroc=metrics.get("mean_auroc"),
                             split=metrics.get("split"))
    distributed.barrier()
    return RunResult(run_dir=run_dir, config=cfg, history=result.history, metrics=metrics, predictions=predictions,
                     train_seconds=result.train_seconds, model=result.model)
