"""Training and evaluation as plain functions over an :class:`~cxrlib.config.ExperimentConfig`.

* :func:`fit` trains with CheXNet's recipe by default (Adam lr 1e-3; learning rate divided
  by 10 when the validation loss plateaus; early stopping on validation mean AUROC; the best
  weights are kept), over batches from :class:`cxrlib.feed.Feed` augmented on the device.
  On CUDA: mixed precision (:func:`cxrlib.step.amp_settings`), channels_last, fused
  optimizers, cuDNN autotuning and TF32 (unless ``train.deterministic``) and, by default,
  the step compiled into CUDA graphs (:class:`cxrlib.step.Stepper`); on CPU the same code
  runs without them. Under ``torchrun`` it uses DistributedDataParallel.
* Checkpoints (``last.pt`` every epoch and optionally every N steps, ``best.pt``) are written
  atomically and hold model, optimizer, scheduler, epoch, step, every RNG state, the config,
  the history and the step log (:mod:`cxrlib.step_log`); an interrupted run resumes from
  ``last.pt`` and ends with the same weights, history and step log as an uninterrupted one (on CPU).
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
from cxrlib.step import Stepper, amp_settings, compile_enabled, make_optimizer, train_step  # noqa: F401 (re-exported)
from cxrlib.step_log import StepLog

FAULT_ENV = "CXRLIB_FAULT_AT_STEP"  # test hook: the process dies (os._exit) after this optimizer step
CHECKPOINT_VERSION = 1


@dataclass
class FitResult:
    model: nn.Module
    history: pd.DataFrame
    run_dir: Path
    train_seconds: float
    reused_stages: dict[str, str] = dataclasses.field(default_factory=dict)  # stage -> run folder it came from
    steps: pd.DataFrame | None = None  # one row per optimizer step (runs.STEP_COLUMNS)


# --------------------------------------------------------------------------- helpers


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def with_channels(ds, channels: int):
    """``ds`` yielding ``channels``-channel images (a dataset that cannot change is returned as is)."""
    if hasattr(ds, "channels") and hasattr(ds, "with_channels") and ds.channels != channels:
        return ds.with_channels(channels)
    return ds


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


def load_global_stage(model: nn.Module, plan, source: Path) -> tuple[_State, list[dict], StepLog] | None:
    """Load the global branch of a two_stage ``model`` from the finished run ``source`` that
    trained exactly that stage (chosen by :func:`cxrlib.experiments.finished_global_stage`);
    returns the loop's state, history and step log after the global stage, as if it had just
    been trained here, or None when ``source`` has no epochs to show (the stage then trains here)."""
    if not plan or plan[0][0] != "global":
        raise ValueError(f"global_stage_from={source} given, but this model's first stage is not 'global'")
    frame = runs.read_history(source)
    if frame is None:
        return None
    weights = ckpt_io.load(Path(source) / runs.BEST)["model"]
    net = _unwrap(model)
    for part, prefix in ((net.global_branch, "branch."), (net.global_classifier, "classifier.")):
        part.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    history = frame.assign(stage="global").to_dict("records")
    metrics = runs.read_metrics(source) or {}
    step = int(history[-1]["step"]) if history else 0
    state = _State(stage_index=1, epoch=len(history), step=step, stage_start_step=step,
                   train_seconds=float(metrics.get("train_seconds", 0.0)), done=len(plan) == 1,
                   reused_stages={"global": str(source)})
    return state, history, StepLog.of_run(source, "global")


class _Training:
    """One ``fit``: the set-up, then named steps (stage, epoch, validation, checkpoint) over it."""

    def __init__(self, cfg: ExperimentConfig, data, model: nn.Module | None, progress: bool,
                 checkpoint_every: int | None):
        tc = self.tc = cfg.train
        self.cfg, self.progress, self.checkpoint_every = cfg, progress, checkpoint_every
        self.info, self.device = distributed.setup(tc.device)
        if tc.threads:
            torch.set_num_threads(int(tc.threads))
        set_seed(cfg.seed, deterministic=False)  # kernels are chosen below, for CUDA only
        if self.device.type == "cuda":
            select_kernels(tc.deterministic)  # when determinism is asked for, it wins over speed
        compile_enabled(tc.compile, self.device)  # a bad value fails now, not after the data is loaded
        if data is None:
            data = _load_data_rank0_first(cfg, progress and self.info.is_main)
        self.train_ds = with_channels(data.train, cfg.model.in_chans)
        self.val_ds = with_channels(data.val, cfg.model.in_chans)
        if hasattr(self.train_ds, "augment"):
            self.train_ds.augment = bool(tc.augment)
        if hasattr(self.train_ds, "seed"):  # augmentation draws follow the training seed; the split, data.seed
            self.train_ds.seed = cfg.seed
        if hasattr(self.val_ds, "tencrop"):
            self.val_ds.tencrop = False
        self.label_names = list(data.label_names)
        if model is None:
            model = create_model_from_config(cfg.model, num_classes=len(self.label_names))
        if tc.batch_size % self.info.world_size:
            raise ValueError(f"train.batch_size={tc.batch_size} is the global batch and must divide by the "
                             f"{self.info.world_size} processes")
        self.rank_batch = tc.batch_size // self.info.world_size
        self.run_dir = runs.run_folder(cfg)
        self.amp = amp_settings(self.device, tc.amp)
        model.to(self.device)
        if self.device.type == "cuda" and tc.channels_last:
            model.to(memory_format=torch.channels_last)
        # BN statistics over the global batch
        self.model = distributed.sync_batchnorm(model) if self.info.enabled and self.device.type == "cuda" else model
        self.loss_fn = _make_loss(tc, _targets(self.train_ds)).to(self.device)
        self.plan = _stage_plan(model, tc)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp[2])
        self.state, self.history, self.steps, self.best_state, self.ckpt = _State(), [], StepLog(), None, None
        self.net, self.optimizer, self.scheduler, self.stepper, self.feeds = model, None, None, None, []

    # ---- before the loop

    def restore(self, resume: bool, global_stage_from: Path | None) -> None:
        """Continue from ``last.pt`` (same fingerprint), else take a finished global stage when given."""
        ckpt = runs.read_last(self.run_dir) if resume else None
        if ckpt is not None and ckpt.get("fingerprint") != self.cfg.fingerprint():
            if self.info.is_main:
                warnings.warn(f"{self.run_dir / runs.LAST} was written by a different config (fingerprint "
                              f"{ckpt.get('fingerprint')} != {self.cfg.fingerprint()}): starting over", stacklevel=3)
            ckpt = None
        if ckpt is not None:
            self.state = _State(**ckpt["state"])
            self.history = list(ckpt["history"])
            self.steps = StepLog.from_state(ckpt.get("steps"))
            self.best_state = ckpt["best_model"]
            _unwrap(self.model).load_state_dict(ckpt["model"])
            self.ckpt = ckpt
        elif global_stage_from is not None:
            reused = load_global_stage(self.model, self.plan, Path(global_stage_from))
            if reused is not None:
                self.state, self.history, self.steps = reused
                # every weight as the global stage's end leaves it when the stage trains here
                net = _unwrap(self.model)
                net.load_state_dict(self.as_stored(net.state_dict()))
                if self.progress and self.info.is_main:
                    print(f"global stage: the finished run {global_stage_from} trained it exactly so; its weights "
                          f"are used")

    def as_stored(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``weights`` at the precision best.pt keeps (``train.weights_dtype``)."""
        names = {name for name, _ in _unwrap(self.model).named_parameters(remove_duplicate=False)}
        return ckpt_io.as_stored(weights, self.tc.weights_dtype, names)

    def announce(self) -> None:
        if self.info.is_main:
            runs.write_config(self.run_dir, self.cfg)
            progress_events.emit("start", runs.run_label(self.cfg), total=sum(n for _, n in self.plan),
                                 done=_planned_done(self.plan, self.state), stages=[s for s, _ in self.plan if s])

    def open_feeds(self) -> None:
        # one order per epoch from (seed, epoch) for every rank; images resident or streamed
        self.train_feed = _feed(self.train_ds, self.rank_batch, self.device, self.tc, shuffle=True, seed=self.cfg.seed)
        self.val_feed = _feed(self.val_ds, max(self.rank_batch, 1) * 2, self.device, self.tc)
        self.feeds = [self.train_feed, self.val_feed]

    # ---- a stage

    def start_stage(self, stage: str | None, n_epochs: int) -> None:
        """What trains in ``stage``: its parameters, a fresh optimizer and schedule, the (compiled) net."""
        tc, device = self.tc, self.device
        if stage is not None:
            _unwrap(self.model).set_stage(stage)
        params = [p for p in _unwrap(self.model).parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {stage!r} of the model has no trainable parameters")
        self.optimizer = make_optimizer(tc.optimizer, params, tc.lr, tc.weight_decay, fused=device.type == "cuda")
        self.scheduler = _make_scheduler(tc, self.optimizer, n_epochs)
        ckpt = self.ckpt
        if ckpt is not None:  # resuming inside this stage: restore its optimizer and schedule
            if ckpt["optimizer"] is not None:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt["scheduler"] is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt["scaler"] is not None:
                self.scaler.load_state_dict(ckpt["scaler"])
        if self.info.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                _unwrap(self.model), device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=stage is not None)
        else:
            self.net = _unwrap(self.model)
        # compiled per stage (a stage changes what trains), for this rank's training batch
        self.stepper = Stepper(self.net, tc.compile, device, self.rank_batch)
        if ckpt is not None:
            ckpt_io.set_rng_state(ckpt["rng"])  # last: nothing may draw between restore and training
            self.ckpt = None

    def train_epoch(self, stage: str | None, t0: float) -> float:
        """The epoch's optimizer steps (the rest of it, when resumed mid-epoch); returns the timer's start."""
        state, tc, info = self.state, self.tc, self.info
        checkpoint_every, fault_at = self.checkpoint_every, int(os.environ.get(FAULT_ENV, "0") or 0)
        self.net.train()
        skip = state.batch_in_epoch  # a run resumed mid-epoch goes on with the batches it had left
        bar = tqdm(self.train_feed.epoch(state.epoch, skip), total=len(self.train_feed) - skip,
                   desc=f"epoch {state.epoch + 1}" + (f" [{stage}]" if stage else ""),
                   disable=not (self.progress and info.is_main), leave=False)
        # the epoch's loss is summed on the device (float64, in the same order as a Python
        # float would be) and read back only at checkpoints: reading it every step would
        # make the CPU wait for the GPU and leave the GPU idle while the next step is queued
        epoch_loss = torch.tensor(state.loss_sum, dtype=torch.float64, device=self.device)
        for x, y in bar:
            loss = self.stepper(x, y, self.loss_fn, self.optimizer, self.scaler, self.amp)
            state.step += 1
            state.batch_in_epoch += 1
            epoch_loss += self.steps.add(loss, len(y), self.optimizer.param_groups[0]["lr"])  # kept on the device
            state.loss_count += len(y)
            if not bar.disable and state.batch_in_epoch % 20 == 0:
                bar.set_postfix(loss=f"{float(epoch_loss) / state.loss_count:.4f}", refresh=False)
            if tc.max_steps is not None and state.step - state.stage_start_step >= tc.max_steps:
                state.stopped = True
                break
            if checkpoint_every and state.step % checkpoint_every == 0 and info.is_main:
                state.train_seconds += time.perf_counter() - t0
                t0 = time.perf_counter()  # the checkpoint's write is counted in the next stretch
                state.loss_sum = float(epoch_loss)
                self.checkpoint()
            if fault_at and state.step == fault_at:
                os._exit(75)  # simulate a crash: no cleanup, no flush
        bar.close()
        state.loss_sum = float(epoch_loss)
        return t0

    def validate(self) -> tuple[float, float]:
        """(validation loss, mean AUROC), predictions gathered from every rank."""
        val_logits, val_probs = _predict(self.net, self.val_feed, self.amp, self.progress, "validate")
        val_y = _targets(self.val_ds)
        val_loss = float(self.loss_fn(torch.from_numpy(val_logits).to(self.device),
                                      torch.from_numpy(val_y).to(self.device)))
        return val_loss, mean_auroc(val_y, val_probs, self.label_names)

    def end_epoch(self, stage: str | None, n_epochs: int, t0: float) -> bool:
        """Validate, keep the best weights, step the schedule, record the epoch; True: the stage ends here."""
        state, info = self.state, self.info
        loss_sum, loss_count, *step_totals = distributed.all_reduce_sum(
            [state.loss_sum, state.loss_count, *self.steps.epoch_totals()], self.device)
        val_loss, val_auc = self.validate()
        score = val_auc if math.isfinite(val_auc) else -val_loss  # no defined class: fall back on loss
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch + 1, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(self.model).state_dict().items()}
        else:
            state.bad_epochs += 1
        lr = self.optimizer.param_groups[0]["lr"]
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        state.train_seconds += time.perf_counter() - t0
        self.history.append({"epoch": state.epoch + 1, "stage": stage or "", "step": state.step, "lr": lr,
                             "train_loss": loss_sum / max(loss_count, 1), "val_loss": val_loss,
                             "val_mean_auroc": val_auc, "best": improved, "seconds": state.train_seconds})
        self.steps.end_epoch(step_totals, state.step, state.epoch + 1, stage)
        state.epoch += 1
        state.stage_epoch += 1
        state.batch_in_epoch, state.loss_sum, state.loss_count = 0, 0.0, 0.0
        ends = state.bad_epochs >= self.tc.early_stopping_patience or state.stopped or state.stage_epoch >= n_epochs
        if info.is_main:
            progress_events.emit("epoch", runs.run_label(self.cfg), stage=stage, stage_index=state.stage_index,
                                 n_stages=len(self.plan), epoch=state.stage_epoch, epochs=n_epochs,
                                 done=_planned_done(self.plan, state), total=sum(n for _, n in self.plan),
                                 ran=state.epoch, step=state.step, seconds=state.train_seconds,
                                 val_mean_auroc=val_auc)
        if info.is_main and self.progress:
            print(f"epoch {state.epoch}{' [' + stage + ']' if stage else ''}: train loss "
                  f"{self.history[-1]['train_loss']:.4f}  val loss {val_loss:.4f}  val mean AUROC {val_auc:.4f}"
                  f"{'  *' if improved else ''}", flush=True)
        if not ends:
            self.timed(self.checkpoint)
        return ends

    def end_stage(self, stage: str | None) -> None:
        """Keep the stage's best weights, then move to the next stage (or finish)."""
        state = self.state
        if self.best_state is not None:
            # the next stage starts from, the test is scored with and best.pt stores the same weights
            self.best_state = self.as_stored(self.best_state)
            _unwrap(self.model).load_state_dict(self.best_state)
        best_state = self.best_state

        def record() -> None:
            if best_state is not None:
                runs.save_best(self.run_dir, best_state, self.cfg, self.label_names, epoch=state.best_epoch,
                               score=state.best_score, stage=stage)
            # a new stage starts with a new optimizer and schedule: store none for it
            self.checkpoint(fresh_stage=not state.done)

        if state.stage_index + 1 >= len(self.plan):
            state.done = True
        else:  # max_steps caps each stage, so a capped staged run still trains every stage
            state.stage_index += 1
            state.stage_start_step, state.stopped = state.step, False
            state.stage_epoch, state.best_score, state.best_epoch, state.bad_epochs = 0, -math.inf, -1, 0
            self.best_state = None
        self.timed(record)

    # ---- records

    def timed(self, write) -> None:
        """Run ``write`` (rank 0 only), its seconds counted in the epoch just recorded: an epoch's
        ``seconds`` include its checkpoint and history, as the per-epoch time of a real run does."""
        if not self.info.is_main:
            return
        t = time.perf_counter()
        write()
        self.state.train_seconds += time.perf_counter() - t
        if self.history:
            self.history[-1]["seconds"] = self.state.train_seconds
        runs.write_history(self.run_dir, self.history, self.steps.rows)

    def checkpoint(self, fresh_stage: bool = False) -> None:
        state = self.state
        ckpt = {
            "version": CHECKPOINT_VERSION,
            "model": _unwrap(self.model).state_dict(),
            "optimizer": None if fresh_stage or self.optimizer is None else self.optimizer.state_dict(),
            "scheduler": None if fresh_stage or self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "state": dataclasses.asdict(state),
            "history": self.history,
            "steps": self.steps.state(),
            "best_model": self.best_state,
            "rng": ckpt_io.rng_state(),
            "config": self.cfg.to_dict(),
            "fingerprint": self.cfg.fingerprint(),
            "label_names": list(self.label_names),
        }
        runs.save_last(self.run_dir, ckpt)

    def close(self) -> None:
        for feed in self.feeds:
            feed.close()


def fit(cfg: ExperimentConfig, data=None, model: nn.Module | None = None, progress: bool = True,
        resume: bool = True, checkpoint_every: int | None = None,
        global_stage_from: str | Path | None = None) -> FitResult:
    """Train ``model`` (or the config's model) on ``data`` (or the config's data).

    ``data`` is anything with ``.train``, ``.val`` and ``.label_names`` (a DataBundle);
    its datasets hand out uint8 batches (:class:`~cxrlib.data.CachedDataset`; arrays in memory
    through ``CachedDataset.from_arrays``). A ``last.pt`` in the run folder with the same config
    fingerprint is resumed (``resume=False`` starts over); ``checkpoint_every`` also
    checkpoints every that many optimizer steps. ``global_stage_from``: a finished run whose
    training was exactly a two_stage model's global stage (the caller decides which:
    :func:`cxrlib.experiments.finished_global_stage`); its weights stand for that stage.
    Returns the model with its best weights.
    """
    cfg.validate()  # every name and size, before a device, a process group or the data is touched
    run = _Training(cfg, data, model, progress, checkpoint_every)
    run.restore(resume, global_stage_from)
    run.announce()
    run.open_feeds()
    state = run.state
    try:
        while not state.done:
            stage, n_epochs = run.plan[state.stage_index]
            run.start_stage(stage, n_epochs)
            ends = state.stage_epoch >= n_epochs or state.stopped
            while not ends:
                t0 = run.train_epoch(stage, time.perf_counter())
                ends = run.end_epoch(stage, n_epochs, t0)
            run.end_stage(stage)
    finally:
        run.close()
    distributed.barrier()
    return FitResult(model=_unwrap(run.model), history=pd.DataFrame(run.history), steps=run.steps.frame(),
                     run_dir=run.run_dir, train_seconds=state.train_seconds, reused_stages=dict(state.reused_stages))


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
                   model: nn.Module | None = None, checkpoint_every: int | None = None,
                   global_stage_from: str | Path | None = None) -> RunResult:
    """Fit, then evaluate on the test split; reuse a finished run with the same fingerprint unless ``redo``.
    ``global_stage_from``: see :func:`fit`."""
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
    result = fit(cfg, data=data, model=model, progress=progress, resume=not redo, checkpoint_every=checkpoint_every,
                 global_stage_from=global_stage_from)
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
                     train_seconds=result.train_seconds, model=result.model, steps=result.steps)
