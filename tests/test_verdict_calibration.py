"""A fast version of bench/verdict_calibration.py: the verdicts' false-call rates stay under their bound.

Fixed seeds, so each rate is one deterministic number; a calibrated test (true rate 0.05 or
less) lands above 0.09 at these repetitions with probability under 1%. Each false-call check
has a companion that shows the simulation can make false calls (a test that ignores the
seeds, a chance that ignores the maps' own distribution), and each verdict a positive
control that fails if its power is lost.
"""
import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench" / "verdict_calibration.py"
BOUND = 0.09


@pytest.fixture(scope="module")
def vc():
    spec = importlib.util.spec_from_file_location("verdict_calibration", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny maps: contended threads are slower than one
    yield module
    torch.set_num_threads(threads)


@pytest.mark.parametrize("n_a, n_b, shared", [(3, 3, False), (2, 2, True)])
def test_aa_comparisons_are_rarely_called(vc, n_a, n_b, shared):
    r = vc.auroc_scenario(300, 19, n_images=300, n_a=n_a, n_b=n_b, seed_sd=0.04, shared=shared)
    assert r["tested"]
    assert r["rate"] <= BOUND, f"A/A {n_a} v {n_b}: design called {r['rate']:.3f}"
    # the same simulated runs, judged by the test patients alone, call a difference far too often
    assert r["test_only"] > 0.12


def test_one_seed_is_not_tested(vc):
    r = vc.auroc_scenario(5, 3, n_images=300, n_a=1, n_b=3, seed_sd=0.02)
    assert not r["tested"]


def test_planted_auroc_difference_is_found(vc):
    r = vc.auroc_scenario(60, 23, n_images=2000, n_a=3, n_b=3, seed_sd=0.005, delta=0.05, shared=False)
    assert r["rate"] >= 0.8, f"power against +0.05 fell to {r['rate']:.2f}"


@pytest.mark.parametrize("kind", ["sparse random", "finding-blind"])
def test_maps_that_know_nothing_do_not_beat_chance(vc, kind):
    r = vc.localization_scenario(200, 29, 12, kind, n_permutations=99, metrics=("pointing_game",))
    assert r["pointing_game"] <= BOUND, f"{kind} maps called better than chance {r['pointing_game']:.3f}"
    if kind == "finding-blind":  # a chance of uniform random maps would call it better most of the time
        assert r["uniform"] > 0.3


def test_a_localizer_beats_chance(vc):
    r = vc.localization_scenario(30, 31, 40, "localizer", n_permutations=99, metrics=("pointing_game",))
    assert r["pointing_game"] >= 0.8, f"power against a localizer fell to {r['pointing_game']:.2f}"
