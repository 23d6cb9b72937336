"""Benchmark: how often the report's verdicts call a difference that is not there, and how often one that is.

    python bench/verdict_calibration.py                 # the full tables (minutes on 2 cores)
    python bench/verdict_calibration.py --reps 60       # a smoke run (rates too coarse to read)

A verdict is worth what its false-call rate is, so every verdict the report prints is run
here on simulated data where the truth is known, through the library's own functions:

* **AUROC comparisons** (:func:`cxrlib.inference.compare_arms`). Each simulated experiment is
  a binormal scorer of three findings (prevalence 5%, 15%, 30%) on a fresh test set of
  patients (two images per patient on average, the patient sharing part of the score
  noise). A training seed moves the scorer's separation (its seed spread: the SD of its
  mean AUROC) and adds its own image-level noise; the rest of the noise belongs to the
  architecture, shared by its seeds. **A/A, same architecture**: both arms are seeds of one
  process (the baseline against more seeds of itself). **A/A, two architectures**: equal
  expected AUROC, but each arm errs on its own images, so the test set alone can separate
  them; this is the case a seeds-only test gets wrong. Planted differences move arm A's
  expected AUROC by +0.02 and +0.05.
* **Localization against chance** (:func:`cxrlib.localization.exact.chance_test`'s
  permutation test, the pointing game as primary metric and T(IoBB) > 0.1 beside it).
  Boxes of one finding scattered around a typical place on a 48 px image; the model's maps
  are uniform noise on a 6x6 grid (the project's random maps), sparse noise
  (ReLU(noise - 0.6)), a finding-blind map that looks where lesions usually are but not where
  this one is, and a localizer whose map peaks on the lesion a third of the time. The
  column "uniform chance" tests the same pointing-game hits against sets of uniform random
  maps instead: what a chance that ignores the map's own value distribution calls.

A rate is the share of repetitions called; its bound is the one-sided 95% Clopper-Pearson
upper bound. It is a simulation: its numbers do not depend on the machine, only on the
seed (``--seed``), which the results file records.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parent.parent

from cxrlib import inference
from cxrlib.cam import upsample_maps
from cxrlib.localization.exact import PRIMARY_METRIC, cross_scores, permutation_test

OUT = REPO / "bench" / "results" / "verdict_calibration.md"
PREVALENCE = (0.05, 0.15, 0.30)
SEPARATION = 1.0  # binormal separation of the baseline: AUROC Phi(1 / sqrt 2) = 0.760
ARCH_SHARE = 0.5  # share of the score noise that belongs to the architecture (shared by its seeds)
PATIENT_SHARE = 0.5  # share of the architecture's noise shared by a patient's images
SIZE, GRID = 48, 6  # localization: image and CAM grid


def upper_bound(calls: int, reps: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate of ``calls`` in ``reps``."""
    return 1.0 if calls >= reps else float(stats.beta.ppf(level, calls + 1, reps - calls))


# ----------------------------------------------------------------------------- AUROC comparisons


def _separation_for(delta: float) -> float:
    """Binormal separation whose AUROC is the baseline's plus ``delta``."""
    return math.sqrt(2) * stats.norm.ppf(stats.norm.cdf(SEPARATION / math.sqrt(2)) + delta)


def _seed_scale(seed_sd: float) -> float:
    """SD of the separation across seeds that gives a mean-AUROC seed SD of ``seed_sd``."""
    return seed_sd / (stats.norm.pdf(SEPARATION / math.sqrt(2)) / math.sqrt(2))


def _arm_scores(rng, y, pid, n_patients, n_seeds, separation, seed_sd, noise=None):
    """Scores of ``n_seeds`` seeds of one architecture; ``noise`` is its own image noise (drawn when None)."""
    N, K = y.shape
    if noise is None:
        per_patient = rng.standard_normal((n_patients, K))[pid]
        noise = math.sqrt(PATIENT_SHARE) * per_patient + math.sqrt(1 - PATIENT_SHARE) * rng.standard_normal((N, K))
    seps = separation + _seed_scale(seed_sd) * rng.standard_normal(n_seeds)
    return [a * y + math.sqrt(ARCH_SHARE) * noise + math.sqrt(1 - ARCH_SHARE) * rng.standard_normal((N, K))
            for a in seps], noise


def auroc_trial(rng, n_images: int, n_a: int, n_b: int, seed_sd: float, delta: float = 0.0,
                shared: bool = True, seed_sd_a: float | None = None) -> dict:
    """One simulated comparison: :func:`inference.compare_arms` of A against B, plus what it would
    say if a side with one seed were tested (pooled seed variance) and two one-sided rules."""
    n_patients = max(2, (2 * n_images) // 3)
    pid = rng.integers(0, n_patients, n_images)
    y = (rng.random((n_images, len(PREVALENCE))) < np.asarray(PREVALENCE)).astype(np.float64)
    y[0], y[1] = 1.0, 0.0  # every finding scorable
    b, noise = _arm_scores(rng, y, pid, n_patients, n_b, SEPARATION, seed_sd)
    a, _ = _arm_scores(rng, y, pid, n_patients, n_a, _separation_for(delta),
                       seed_sd if seed_sd_a is None else seed_sd_a, noise if shared else None)
    c = inference.compare_arms(y, a, b, patient_ids=pid, min_seeds=1)
    z_test_only = abs(c["diff"]) / math.sqrt(c["paired_test_variance"])
    seeds_only = math.nan
    if c["seed_variance_part"] > 0:
        t = abs(c["diff"]) / math.sqrt(c["seed_variance_part"])
        seeds_only = 2 * stats.t.sf(t, n_a + n_b - 2)
    return {"p": c["p_value"], "diff": c["diff"], "mdd": c["mdd"], "seed_sd": c["seed_sd"],
            "test_only_called": z_test_only > stats.norm.ppf(0.975), "seeds_only_p": seeds_only,
            "tested": min(n_a, n_b) >= inference.MIN_SEEDS}


def auroc_scenario(reps: int, seed: int, **kw) -> dict:
    rng = np.random.default_rng(seed)
    trials = [auroc_trial(rng, **kw) for _ in range(reps)]
    called = sum(t["p"] < inference.ALPHA for t in trials)
    tested = trials[0]["tested"]
    return {"reps": reps, "called": called, "rate": called / reps, "bound": upper_bound(called, reps),
            "tested": tested, "mdd": float(np.median([t["mdd"] for t in trials])),
            "seed_sd": float(np.nanmedian([t["seed_sd"] for t in trials])),
            "test_only": float(np.mean([t["test_only_called"] for t in trials])),
            "seeds_only": float(np.nanmean([t["seeds_only_p"] < 0.05 for t in trials]))}


# ----------------------------------------------------------------------------- localization


def _blob(points: np.ndarray, size: int, width: float) -> np.ndarray:
    """Gaussian bumps ``[n, size, size]`` centred on ``points`` ``[n, 2]`` (x, y in pixels of this grid)."""
    centres = np.arange(size) + 0.5
    dx = centres[None, None, :] - points[:, 0, None, None]
    dy = centres[None, :, None] - points[:, 1, None, None]
    return np.exp(-(dx ** 2 + dy ** 2) / (2 * width ** 2)).astype(np.float32)


def lesion_boxes(rng, n: int) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """Box centres ``[n, 2]`` scattered around a typical place, and the boxes (x, y, w, h)."""
    centres = np.clip(np.array([30.0, 22.0]) + 7.0 * rng.standard_normal((n, 2)), 6, SIZE - 6)
    wh = rng.uniform(6, 16, (n, 2))
    boxes = [(float(cx - w / 2), float(cy - h / 2), float(w), float(h)) for (cx, cy), (w, h) in zip(centres, wh)]
    return centres, boxes


def model_maps(rng, kind: str, centres: np.ndarray, hit_share: float = 1 / 3) -> np.ndarray:
    """Maps ``[n, SIZE, SIZE]`` of one kind of model for lesions centred at ``centres``."""
    n = len(centres)
    noise = rng.random((n, GRID, GRID), dtype=np.float32)
    if kind == "random":
        return upsample_maps(noise, (SIZE, SIZE))
    if kind == "sparse random":
        return upsample_maps(np.maximum(noise - 0.6, 0.0), (SIZE, SIZE))
    if kind == "finding-blind":  # where lesions usually are, drawn apart from where this one is
        typical, _ = lesion_boxes(rng, n)
        return upsample_maps(_blob(typical * GRID / SIZE, GRID, 0.8) + 0.1 * noise, (SIZE, SIZE))
    if kind == "localizer":  # a third of its maps peak on the lesion, the rest are random
        maps = upsample_maps(noise, (SIZE, SIZE))
        on = rng.random(n) < hit_share
        maps[on] = _blob(centres[on], SIZE, 3.0)
        return maps
    raise ValueError(f"unknown model kind {kind!r}")


def _random_peaks(rng, count: int) -> np.ndarray:
    """Peak pixel (flat index) of ``count`` uniform random maps: the old chance's draws."""
    maps = upsample_maps(rng.random((count, GRID, GRID), dtype=np.float32), (SIZE, SIZE))
    return maps.reshape(count, -1).argmax(1)


def _inside(boxes) -> np.ndarray:
    """Boolean ``[n, SIZE * SIZE]``: pixels whose centre lies in each box (the pointing game's rule)."""
    c = np.arange(SIZE) + 0.5
    return np.stack([((c[None, :] >= x) & (c[None, :] <= x + w) & (c[:, None] >= y) & (c[:, None] <= y + h)).ravel()
                     for x, y, w, h in boxes])


def localization_trial(rng, n: int, kind: str, n_permutations: int, peak_pool: np.ndarray,
                       metrics: tuple[str, ...] = (PRIMARY_METRIC, "iobb@0.1")) -> dict:
    """One simulated heatmap evaluation: permutation p-values per metric (the primary first), and
    the uniform-chance p-value of the pointing game."""
    centres, boxes = lesion_boxes(rng, n)
    maps = model_maps(rng, kind, centres)
    out = {}
    for metric in metrics:
        cross = cross_scores(maps, boxes, metric)
        r = permutation_test(cross, n_permutations, int(rng.integers(2**31)))
        out[metric], out[metric + " gain"] = r["p_value"], r["model"] - r["chance"]
        if metric == PRIMARY_METRIC:
            model = r["model"]
    # uniform chance: the model's hit rate against the hit rates of whole sets of uniform random maps
    peaks = peak_pool[rng.integers(0, len(peak_pool), (n_permutations, n))]
    chance = _inside(boxes)[np.arange(n)[None, :], peaks].mean(1)
    out["uniform"] = (1 + (chance >= model - 1e-12).sum()) / (1 + n_permutations)
    return out


def localization_scenario(reps: int, seed: int, n: int, kind: str, n_permutations: int = 199,
                          metrics: tuple[str, ...] = (PRIMARY_METRIC, "iobb@0.1")) -> dict:
    rng = np.random.default_rng(seed)
    pool = _random_peaks(rng, 4000)
    trials = [localization_trial(rng, n, kind, n_permutations, pool, metrics) for _ in range(reps)]
    row = {"reps": reps, "n": n, "kind": kind}
    for key in (*metrics, "uniform"):
        called = sum(t[key] < 0.05 for t in trials)
        row[key] = called / reps
        row[key + " bound"] = upper_bound(called, reps)
    row["gain"] = float(np.mean([t[PRIMARY_METRIC + " gain"] for t in trials]))
    return row


# ----------------------------------------------------------------------------- tables

DESIGNS = ((1, 3), (2, 2), (3, 3), (5, 5))
SEED_SDS = (0.005, 0.02, 0.04)
TEST_SIZES = (300, 1000)
IMAGES = (6, 12, 40, 200)
MAP_KINDS = ("random", "sparse random", "finding-blind")


def _rate(calls_rate: float, bound: float) -> str:
    return f"{calls_rate:.3f} ({bound:.3f})"


def _scenarios(reps: int, seed: int, n_permutations: int) -> list[tuple[str, int, dict]]:
    """Every simulated scenario as (part, seed, arguments): independent, so they run in any order."""
    out = []
    for n_a, n_b in DESIGNS:  # the harder null first: two architectures that err on different images
        for sd in SEED_SDS:
            for n in TEST_SIZES:
                out.append(("null", dict(n_images=n, n_a=n_a, n_b=n_b, seed_sd=sd, shared=False)))
    for n_a, n_b in DESIGNS[1:]:
        for sd in SEED_SDS:
            out.append(("null", dict(n_images=300, n_a=n_a, n_b=n_b, seed_sd=sd, shared=True)))
    for n in TEST_SIZES:  # a single seed whose architecture varies twice as much: what pooling would hide
        out.append(("null", dict(n_images=n, n_a=1, n_b=3, seed_sd=0.02, seed_sd_a=0.04, shared=False)))
    for delta in (0.02, 0.05):
        for n_a, n_b in DESIGNS[1:]:
            for sd in SEED_SDS[:2]:
                out.append(("power", dict(n_images=1000, n_a=n_a, n_b=n_b, seed_sd=sd, delta=delta, shared=False)))
    for kind in (*MAP_KINDS, "localizer"):
        for n in IMAGES:
            metrics = (PRIMARY_METRIC, "iobb@0.1") if n <= 40 else (PRIMARY_METRIC,)
            out.append(("loc", dict(n=n, kind=kind, n_permutations=n_permutations, metrics=metrics)))
    return [(part, seed + 1 + i, kw) for i, (part, kw) in enumerate(out)]


def _run(job: tuple[str, int, dict, int]) -> tuple[str, dict, dict]:
    part, seed, kw, reps = job
    import torch

    torch.set_num_threads(1)  # small tensors: one thread is faster than two contended ones
    if part == "loc":
        return part, kw, localization_scenario(reps if kw["kind"] != "localizer" else max(reps // 2, 1), seed, **kw)
    return part, kw, auroc_scenario(reps if part == "null" else max(reps // 2, 1), seed, **kw)


def _null_line(kw: dict, r: dict) -> str:
    n_a, n_b = kw["n_a"], kw["n_b"]
    null = ("same architecture" if kw["shared"] else "two architectures"
            + (f", A's seed SD {kw['seed_sd_a']:g}" if kw.get("seed_sd_a") else ""))
    word = "tested" if r["tested"] else f"not tested: {min(n_a, n_b)} seed"
    return (f"| {null} | {n_a} v {n_b} | {kw['seed_sd']:g} | {kw['n_images']} | {_rate(r['rate'], r['bound'])} | "
            f"{word} | {r['mdd']:.3f} | {r['test_only']:.3f} | {r['seeds_only']:.3f} |")


def _power_line(kw: dict, r: dict) -> str:
    return (f"| +{kw['delta']:g} | {kw['n_a']} v {kw['n_b']} | {kw['seed_sd']:g} | {kw['n_images']} | "
            f"{r['rate']:.3f} | {r['mdd']:.3f} |")


def _loc_line(kw: dict, r: dict) -> str:
    iobb = _rate(r["iobb@0.1"], r["iobb@0.1 bound"]) if "iobb@0.1" in r else "(not run)"
    return (f"| {kw['kind']} | {kw['n']} | {_rate(r[PRIMARY_METRIC], r[PRIMARY_METRIC + ' bound'])} | {iobb} | "
            f"{_rate(r['uniform'], r['uniform bound'])} | {r['gain']:+.3f} |")


def tables(reps: int, seed: int, n_permutations: int, jobs: int = 1) -> dict[str, list[str]]:
    """The three tables, each scenario simulated with its own seed (so ``jobs`` does not change a number)."""
    work = [(part, s, kw, reps) for part, s, kw in _scenarios(reps, seed, n_permutations)]
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            done = pool.map(_run, work, chunksize=1)
    else:
        done = [_run(w) for w in work]
    parts = {
        "null": ["| null | seeds A v B | seed SD | test images | called (upper 95%) | verdict | median MDD | "
                 "test patients only | seeds only |", "|---|---|---|---|---|---|---|---|---|"],
        "power": ["| planted difference | seeds A v B | seed SD | test images | called better | median MDD |",
                  "|---|---|---|---|---|---|"],
        "loc": ["| model maps | images | pointing game (primary) | T(IoBB) > 0.1 | uniform chance, pointing game | "
                "hit rate minus chance |", "|---|---|---|---|---|---|"],
    }
    lines = {"null": _null_line, "power": _power_line, "loc": _loc_line}
    for part, kw, r in done:
        parts[part].append(lines[part](kw, r))
    return parts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=400, help="repetitions per null scenario (half as many for the "
                    "power rows)")
    ap.add_argument("--permutations", type=int, default=199, help="permutations per localization test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="processes (the numbers do not depend on it)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    started = time.time()
    parts = tables(args.reps, args.seed, args.permutations, args.jobs)
    minutes = (time.time() - started) / 60
    text = _document(args, parts, minutes)
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)  # atomic: a reader never sees half a table
    print(text)
    return 0


def _document(args, parts, minutes: float) -> str:
    cmd = "python bench/verdict_calibration.py" + ("" if (args.reps, args.permutations, args.seed) == (400, 199, 0)
                                                   else f" --reps {args.reps} --permutations {args.permutations} "
                                                        f"--seed {args.seed}")
    cmd += f" --jobs {args.jobs}" if args.jobs > 1 else ""
    # here, not at the top: the tests import this module from tests/, where bench/ is not on the path
    from _header import header_lines  # bench/_header.py: the machine line every result starts with

    return "\n".join([
        "# Verdict calibration: false calls and power, measured by simulation", "",
        *header_lines(cmd, note=f"seed {args.seed}; {args.reps} repetitions per null scenario; "
                                f"{args.permutations} permutations per localization test"),
        f"- wall time {minutes:.1f} min (a simulation: the numbers depend on the seed, not on the machine)",
        "- rates: share of repetitions called at alpha = 0.05, in brackets the one-sided 95% Clopper-Pearson upper "
        "bound. A verdict the report prints must have a rate <= 0.05 with a bound <= 0.08.", "",
        "## AUROC: experiment against baseline, nothing to find (A/A)", "",
        "The design of `cxrlib.inference` (t-test of the seed-mean difference, seed variance pooled within arms "
        "plus the test-patient variance from DeLong placements per patient less each seed's own image-level noise, "
        "which the seed variance already holds; on the seeds' degrees of freedom). "
        "`1 v 3` is never tested by the report (\"not tested: 1 seed\"); its rate says what it would call if it "
        "were, with the seed variance borrowed from the other arm. *Test patients only*: the rate of a test that "
        "ignores the seeds (the paired patient CI alone); *seeds only*: a t-test on the seeds alone. Median MDD: "
        "the difference the design calls 80% of the time.", "",
        *parts["null"], "",
        "## AUROC: power against planted differences (two architectures)", "",
        "Arm A's expected AUROC is the baseline's plus the planted difference; *called better* is the share of "
        f"repetitions the design calls it ({max(args.reps // 2, 1)} repetitions a row).", "",
        *parts["power"], "",
        "## Localization against chance", "",
        "`cxrlib.localization.exact`: the model's own maps against other images' boxes (permutation test, the "
        "pointing game primary, T(IoBB) > 0.1 beside it). The first three kinds of map know nothing about where "
        "this image's lesion is; *uniform chance* tests the same hits against sets of uniform random maps on the "
        "6x6 grid, the chance that sparse and finding-blind maps beat without knowing anything. The localizer's "
        f"maps peak on the lesion a third of the time ({max(args.reps // 2, 1)} repetitions a row); the last column "
        "is the model's hit rate minus the permutation chance's mean. T(IoBB) is run up to 40 images.", "",
        *parts["loc"], "",
    ])


if __name__ == "__main__":
    sys.exit(main())
