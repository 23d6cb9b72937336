"""The training loss of every optimizer step: the learning curve inside an epoch.

Each step's loss stays on the device while the epoch runs and is copied to the host once,
at the epoch's end (or at a checkpoint, which waits for the device anyway): reading it after
every step would make the CPU wait for the GPU and leave the GPU idle while the next step is
queued. The log is part of the training loop's resumable state (:meth:`StepLog.state`), so
a run killed and resumed ends with the same log as an uninterrupted one; :mod:`cxrlib.runs`
stores its rows as ``steps.csv``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from cxrlib import runs


class StepLog:
    """The steps of the finished epochs (``rows``) and of the epoch under way (this rank's)."""

    def __init__(self, rows: Sequence[dict] = (), loss_sums: Sequence[float] = (),
                 samples: Sequence[int] = (), lrs: Sequence[float] = ()):
        self.rows = list(rows)  # one dict per step, with runs.STEP_COLUMNS
        self.loss_sums = list(loss_sums)  # this epoch's steps so far: loss x images, on the host
        self.samples = list(samples)
        self.lrs = list(lrs)
        self._on_device: list[torch.Tensor] = []  # loss x images of the steps not yet copied

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "StepLog":
        """The log as :meth:`state` stored it (empty for a checkpoint written before the log existed)."""
        return cls(**(state or {}))

    @classmethod
    def of_run(cls, run_dir: str | Path, stage: str) -> "StepLog":
        """A finished run's step log as the steps of ``stage`` (empty when the run kept none)."""
        frame = runs.read_steps(run_dir)
        return cls([] if frame is None else frame.assign(stage=stage).to_dict("records"))

    def add(self, loss: torch.Tensor, samples: int, lr: float) -> torch.Tensor:
        """One step: its mean loss over ``samples`` images (left on its device) and its learning
        rate; returns the loss times the images, the step's share of the epoch's sum."""
        loss_sum = loss.detach().double() * samples  # a new tensor: a CUDA graph's output is overwritten
        self._on_device.append(loss_sum)
        self.samples.append(int(samples))
        self.lrs.append(float(lr))
        return loss_sum

    def to_host(self) -> None:
        if self._on_device:
            self.loss_sums.extend(torch.stack(self._on_device).tolist())  # one copy, one wait
            self._on_device.clear()

    def state(self) -> dict[str, Any]:
        """Everything a resumed run continues from (plain lists: a checkpoint loads it with weights_only)."""
        self.to_host()
        return {"rows": self.rows, "loss_sums": self.loss_sums, "samples": self.samples, "lrs": self.lrs}

    def epoch_totals(self) -> list[float]:
        """This epoch's loss sums, then its image counts, one per step: what is summed over ranks."""
        self.to_host()
        return [*self.loss_sums, *self.samples]

    def end_epoch(self, totals: Sequence[float], last_step: int, epoch: int, stage: str | None) -> None:
        """Turn the epoch's steps into rows; ``totals`` is :meth:`epoch_totals` summed over ranks,
        so each step's loss is the mean over the images of its global batch."""
        n = len(self.samples)
        if len(totals) != 2 * n:
            raise ValueError(f"step log: {len(totals)} totals for {n} steps (expected {2 * n})")
        first = last_step - n + 1
        self.rows.extend({"step": first + i, "epoch": epoch, "stage": stage or "", "samples": int(images),
                          "train_loss": total / max(images, 1), "lr": lr}
                         for i, (total, images, lr) in enumerate(zip(totals[:n], totals[n:], self.lrs)))
        self.loss_sums, self.samples, self.lrs = [], [], []

    def frame(self) -> pd.DataFrame:
        """The finished epochs' steps, one row each (the columns of ``steps.csv``)."""
        return pd.DataFrame(self.rows, columns=list(runs.STEP_COLUMNS))
