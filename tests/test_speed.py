"""The speed probe and the wall time of a run (what ``cxrlib check`` adds up per notebook)."""
from __future__ import annotations

import time

import pytest

from cxrlib.speed import Speed, _fit_line, planned_steps, run_seconds, speed_probe
from test_preflight import config


def test_planned_steps_and_the_time_formula(tmp_path):
    cfg = config(tmp_path, train={"epochs": 3, "batch_size": 8})
    assert planned_steps(cfg, 100) == (39, 3)  # 13 batches per epoch
    capped = config(tmp_path, train={"epochs": 3, "batch_size": 8, "max_steps": 20})
    assert planned_steps(capped, 100) == (20, 2)
    staged = config(tmp_path, train={"stage_epochs": [2, 1, 1], "batch_size": 8, "max_steps": 20})
    assert planned_steps(staged, 100) == (20 + 13 + 13, 2 + 1 + 1)
    speed = Speed(step_s=0.05, image_s=0.01, eval_image_s=0.002, batches=(2, 8))
    assert run_seconds(cfg, speed, 100, 30, 40) == pytest.approx(39 * (0.05 + 8 * 0.01) + 3 * 30 * 0.002
                                                                 + 40 * 0.002)
    tencrop = config(tmp_path, train={"epochs": 3, "batch_size": 8, "tta": "tencrop"})
    assert run_seconds(tencrop, speed, 100, 30, 40) == pytest.approx(
        39 * (0.05 + 8 * 0.01) + 3 * 30 * 0.002 + 40 * 10 * 0.002)


def test_step_time_line_through_the_probed_batches():
    assert _fit_line({2: 0.3, 8: 0.6}) == pytest.approx((0.2, 0.05))
    assert _fit_line({16: 0.8}) == pytest.approx((0.0, 0.05))  # the profile's own batch (CUDA)
    assert _fit_line({2: 0.5, 8: 0.4}) == pytest.approx((0.4, 0.0))  # noise: no negative slope
    assert _fit_line({2: 0.1, 8: 2.0}) == pytest.approx((0.0, 0.25))  # nor a negative fixed part


def test_speed_probe_on_this_cpu_is_quick(tmp_path):
    cfg = config(tmp_path, train={"batch_size": 16})
    t0 = time.perf_counter()
    speed = speed_probe(cfg)
    assert time.perf_counter() - t0 < 60  # seconds on a quiet machine; a loaded one is far slower
    assert speed.batches == (2, 8) and speed.peak_memory is None
    assert speed.step_s >= 0 and speed.image_s >= 0 and speed.train_step_s(16) > 0 and speed.eval_image_s > 0
