"""Runs compared and put into words: the results table, the verdict rule, the conclusions,
and the one convention for writing a CI, a p-value and a verdict."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlib import results, runs
from cxrlib.results import VERDICT_RULE, verdict


# ----------------------------------------------------------------------------- the results table


def test_results_table_pairs_runs_with_the_baseline(fake_runs):
    table = results.results_table(fake_runs, n_bootstrap=200)
    assert list(table["experiment"]) == ["baseline", "fpn", "other_split"]
    base, fpn, other = (table.iloc[i] for i in range(3))
    assert 0 <= base["CI low"] <= base["mean AUROC"] <= base["CI high"] <= 1
    assert np.isnan(base["diff vs baseline"])
    assert fpn["head"] == "fpn" and fpn["mean AUROC"] > base["mean AUROC"]
    assert fpn["diff vs baseline"] == pytest.approx(fpn["mean AUROC"] - base["mean AUROC"], abs=1e-9)
    assert fpn["diff CI low"] > 0 and fpn["p-value"] < 0.05
    assert np.isnan(other["diff vs baseline"])  # another test set: no paired difference
    text = results.format_results(table)
    assert text.loc[1, "vs baseline [95% CI]"].startswith("+0.")
    assert text.loc[2, "split"].startswith("official")
    assert "[" in text.loc[0, "mean AUROC [95% CI]"]


def test_results_table_shows_seed_spread_and_the_verdict(seeded_runs):
    table = results.results_table(seeded_runs, n_bootstrap=300).set_index("experiment")
    per_seed = {name: [json.loads((d / runs.METRICS).read_text())["mean_auroc"] for d in dirs]
                for name, dirs in runs.experiment_runs(seeded_runs).items()}
    for name, values in per_seed.items():
        row = table.loc[name]
        assert row["seeds"] == 3
        assert row["mean AUROC"] == pytest.approx(np.mean(values))  # the mean over seeds
        assert row["seed SD"] == pytest.approx(np.std(values, ddof=1))
        assert (row["seed min"], row["seed max"]) == pytest.approx((min(values), max(values)))
        assert row["CI low"] < row["mean AUROC"] < row["CI high"]
    base, better, mixed = table.loc["baseline"], table.loc["better"], table.loc["mixed"]
    assert better["diff vs baseline"] == pytest.approx(better["mean AUROC"] - base["mean AUROC"])
    assert better["seed diff min"] == pytest.approx(min(per_seed["better"]) - max(per_seed["baseline"]))
    assert better["seed diff max"] == pytest.approx(max(per_seed["better"]) - min(per_seed["baseline"]))
    assert better["verdict"] == "better" and better["diff CI low"] > 0
    # the paired test alone would call "mixed" better; its seeds do not agree, so it is not
    assert mixed["diff CI low"] > 0 and mixed["p-value"] < 0.05
    assert mixed["seed diff min"] < 0 < mixed["seed diff max"]
    assert mixed["verdict"] == "no difference shown" and "seeds overlap" in mixed["reason"]
    assert base["verdict"] == "" and np.isnan(base["diff vs baseline"])
    text = results.format_results(table.reset_index()).set_index("experiment")
    assert text.loc["better", "seeds"] == "3" and text.loc["better", "verdict"] == "better"
    assert text.loc["mixed", "per-seed differences"].startswith("-0.") and " to +0." in text.loc["mixed", "per-seed differences"]
    assert text.loc["baseline", "seed SD [min, max]"].startswith(f"{base['seed SD']:.3f} [")


def test_results_table_of_given_seed_folders_equals_the_folder_scan(seeded_runs):
    groups = runs.experiment_runs(seeded_runs)
    scanned = results.results_table(seeded_runs, n_bootstrap=100)
    given = results.results_table(groups, n_bootstrap=100)
    pd.testing.assert_frame_equal(scanned, given)
    one = results.results_table({k: v[:1] for k, v in groups.items()}, n_bootstrap=100).set_index("experiment")
    assert (one["seeds"] == 1).all() and one["seed SD"].isna().all()
    # one seed each: the spread is unmeasured, so no difference is called, however clear
    assert one.loc["better", "verdict"] == "no difference shown" and "not measured" in one.loc["better", "reason"]
    assert "mixed" not in results.results_table(seeded_runs, n_bootstrap=50, leave_out=["mixed"])["experiment"].tolist()


def test_control_is_a_row_paired_with_the_baseline(seeded_runs, control_run):
    base = runs.load_predictions(seeded_runs / "baseline")
    noise = np.random.default_rng(5).random(base["targets"].shape).astype(np.float32)
    control_run(seeded_runs, base["targets"], base["ids"], 0.05 * base["targets"] + noise)
    table = results.results_table(seeded_runs, n_bootstrap=200)
    assert list(table["experiment"]) == ["baseline", "shortcut_control", "better", "mixed"]
    control = table.iloc[1]
    assert control["kind"] == runs.CONTROL and control["model"] == "intensity statistics" and control["loss"] == ""
    assert control["seeds"] == 1 and np.isnan(control["seed SD"])
    assert control["diff vs baseline"] < 0 and control["diff CI high"] < 0
    assert control["verdict"] == "worse"  # the baseline's three seeds all sit above the control
    text = results.format_results(table)
    assert text.loc[1, "seeds"] == "none (fitted)" and text.loc[1, "vs baseline [95% CI]"].startswith("-0.")


# ----------------------------------------------------------------------------- the verdict


@pytest.mark.parametrize("case, args, called, label, words", [
    ("both agree, better", (0.01, 0.05, 0.002, 0.06, 3, 3), True, "better", "excludes 0 and every seed agrees"),
    ("both agree, worse", (-0.05, -0.01, -0.07, -0.004, 3, 3), True, "worse", "every seed agrees"),
    ("paired test significant, seeds disagree", (0.01, 0.05, -0.02, 0.08, 3, 3), False, "no difference shown",
     "seeds overlap (per-seed differences -0.020 to +0.080)"),
    ("seeds agree, paired CI includes 0", (-0.01, 0.05, 0.01, 0.04, 3, 3), False, "no difference shown",
     "paired 95% CI [-0.010, +0.050] includes 0"),
    ("neither", (-0.01, 0.05, -0.02, 0.04, 3, 3), False, "no difference shown", "includes 0 and the seeds overlap"),
    ("one seed each", (0.01, 0.05, 0.03, 0.03, 1, 1), False, "no difference shown", "seed spread is not measured"),
    ("one seed against the baseline's three", (0.01, 0.05, 0.01, 0.04, 1, 3), True, "better", "every seed agrees"),
    ("the two checks point opposite ways", (0.01, 0.05, -0.04, -0.01, 3, 3), False, "no difference shown",
     "point the other way"),
    ("another test set", (math.nan, math.nan, math.nan, math.nan, 3, 3), False, "not compared", "same test images"),
])
def test_verdict_calls_a_difference_only_when_the_paired_test_and_the_seeds_agree(case, args, called, label, words):
    v = verdict(*args)
    assert (v.called, v.label) == (called, label), case
    assert words in v.reason, (case, v.reason)
    assert v.direction == (0 if not called else 1 if label == "better" else -1)


def test_the_verdict_rule_is_stated_where_it_is_applied():
    for phrase in ("95% CI of the paired difference", "excludes 0", "every seed", "at least two seeds"):
        assert phrase in VERDICT_RULE


# ----------------------------------------------------------------------------- conclusions


def test_conclusions_are_made_from_the_numbers(study):
    table = results.results_table(study, n_bootstrap=100)
    words = results.conclusions(table)
    assert words.rule == results.VERDICT_RULE
    better = next(line for line in words.comparisons if line.startswith("better "))
    row = table.set_index("experiment").loc["better"]
    for number in (row["mean AUROC"], row["diff CI low"], row["seed diff max"]):
        assert f"{abs(number):.3f}" in better
    assert "Verdict: better than the baseline" in better
    mixed = next(line for line in words.comparisons if line.startswith("mixed "))
    assert "Verdict: no difference shown, because the seeds overlap" in mixed
    assert words.control.startswith("The baseline's mean AUROC") and "above that of shortcut_control" in words.control
    # change a number and the sentence changes with it, verdict included
    changed = table.copy()
    i = changed.index[changed["experiment"] == "better"][0]
    changed.loc[i, ["diff CI low", "seed diff min"]] = [-0.004, -0.02]
    again = next(line for line in results.conclusions(changed).comparisons if line.startswith("better "))
    assert again != better and "-0.004" in again and "-0.020" in again
    assert "Verdict: no difference shown, because the paired 95% CI includes 0 and the seeds overlap" in again
    # the control above the baseline reads the other way
    j = changed.index[changed["experiment"] == "shortcut_control"][0]
    changed.loc[j, ["diff vs baseline", "diff CI low", "diff CI high", "seed diff min", "seed diff max"]] = [
        0.05, 0.02, 0.08, 0.01, 0.09]
    assert "0.050 below that of shortcut_control" in results.conclusions(changed).control
    assert "intensity statistics alone beat the baseline" in results.conclusions(changed).control
    md = words._repr_markdown_()
    assert md.startswith("*A difference from the baseline") and "\n- better " in md


# ----------------------------------------------------------------------------- the convention


def test_one_convention_writes_every_statistic():
    assert results.estimate_text(0.7123, 0.6901, 0.7334) == "0.712 [0.690, 0.733]"
    assert results.estimate_text(0.012, -0.01, 0.035, signed=True) == "+0.012 [-0.010, +0.035]"
    assert results.estimate_text(0.012, math.nan, 0.035, signed=True) == "+0.012"  # no CI: the estimate alone
    assert results.estimate_text(math.nan) == results.MISSING and results.estimate_text(None, missing="") == ""
    assert results.interval_text(0.1, None) == "" and results.interval_text(0.1, None, missing="n/a") == "n/a"
    assert results.range_text(-0.01, 0.02, signed=True) == "-0.010 to +0.020"
    assert (results.p_text(0.0004), results.p_text(0.0341), results.p_text(math.nan)) == ("< 0.001", "0.034", "")
    assert results.p_text(0.0004, sentence=True) == "p < 0.001" and results.p_text(0.0341, sentence=True) == "p = 0.034"
    assert results.p_text(None, sentence=True) == f"p {results.MISSING}"
    assert results.seeds_text(3) == "3" and results.seeds_text(1, runs.CONTROL) == "none (fitted)"


@pytest.mark.parametrize("lo, hi, n, lower_is_better, expected", [
    (0.05, 0.2, 8, False, results.BETTER),
    (-0.2, -0.05, 8, False, results.WORSE),
    (-0.2, -0.05, 8, True, results.BETTER),  # fewer false positives than random maps
    (-0.05, 0.2, 8, False, results.NO_DIFFERENCE),
    (math.nan, math.nan, 8, False, results.NO_DIFFERENCE),
    (0.05, 0.2, 5, False, results.TOO_FEW),
])
def test_interval_verdict_reads_one_paired_ci(lo, hi, n, lower_is_better, expected):
    assert results.interval_verdict(lo, hi, n, 6, lower_is_better=lower_is_better) == expected


def test_no_other_module_writes_a_p_value_or_a_ci():
    """The convention has one home: no module of the package spells a p-value threshold or a
    signed CI of its own."""
    package = Path(results.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "results.py":
            continue
        text = path.read_text()
        for spelled in ("0.001\" if", "< 0.001\"", "<0.001\"", ":+.3f}, {", ":.3f}, {"):
            assert spelled not in text, f"{path.relative_to(package)} writes a statistic itself ({spelled!r})"
        # any f-string pair of formatted numbers in brackets is a CI written by hand, whatever its format
        hand_made = re.findall(r"\[\{[^}]*\}, ?\{[^}]*\}\]", text)
        assert not hand_made, f"{path.relative_to(package)} writes a CI itself: {hand_made}; ask results.interval_text"


def test_the_command_line_writes_metrics_by_the_convention():
    from cxrlib.cli import format_metrics

    metrics = {"experiment": "x", "split": "official", "n_images": 9, "mean_auroc": 0.7123, "mean_auroc_ci": [0.6901, 0.7334],
               "per_class": {"Hernia": {"auroc": 0.81234, "auroc_ci": [0.7, 0.9], "auprc": 0.25, "n_pos": 3},
                             "Nodule": {"auroc": None, "auroc_ci": [None, None], "auprc": None, "n_pos": 0}},
               "undefined": ["Nodule"]}
    text = format_metrics(metrics)
    assert results.interval_text(0.7, 0.9) in text and results.number_text(0.81234) in text
    mean_line = next(line for line in text.splitlines() if line.startswith("mean"))
    assert mean_line.split()[1:] == results.estimate_text(0.7123, 0.6901, 0.7334).split()
    nodule = next(line for line in text.splitlines() if line.startswith("Nodule"))
    assert nodule.count(results.MISSING) == 3  # AUROC, its CI and AUPRC: said, not printed as n/a or nan
