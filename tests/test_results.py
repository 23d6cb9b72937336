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

from cxrlib import conclusions, results, runs
from cxrlib.labels import FINDINGS
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
    # one seed a side: how far another seed would land is unknown, so the design does not test it
    assert fpn["verdict"] == "not tested: 1 seed" and np.isnan(fpn["p-value"]) and np.isnan(fpn["diff CI low"])
    assert base["CI covers"].startswith("test patients only")
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
    assert better["verdict"] == "better" and better["diff CI low"] > 0 and better["p-value"] < 0.05
    assert base["CI covers"] == "seeds and test patients"
    # a test-patient bootstrap alone would call "mixed" better (one seed far above); its seed spread
    # enters the design's variance, so it is not, and the verdict says what could have been shown
    assert mixed["seed diff min"] < 0 < mixed["seed diff max"] and mixed["p-value"] > 0.05
    assert mixed["verdict"] == f"no difference larger than {mixed['MDD']:.3f} shown" and "includes 0" in mixed["reason"]
    assert mixed["MDD"] > abs(mixed["diff vs baseline"])
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
    # one seed each: the spread is unmeasured, so nothing is tested, however clear
    assert one.loc["better", "verdict"] == "not tested: 1 seed" and "needs 2 a side" in one.loc["better", "reason"]
    assert not (one["kind"] == results.DESIGN_CONTROL).any()  # no seed spread to simulate the A/A control from
    assert "mixed" not in results.results_table(seeded_runs, n_bootstrap=50, leave_out=["mixed"])["experiment"].tolist()


def test_control_is_a_row_paired_with_the_baseline(seeded_runs, control_run):
    base = runs.load_predictions(seeded_runs / "baseline")
    noise = np.random.default_rng(5).random(base["targets"].shape).astype(np.float32)
    control_run(seeded_runs, base["targets"], base["ids"], 0.05 * base["targets"] + noise)
    table = results.results_table(seeded_runs, n_bootstrap=200)
    assert list(table["experiment"]) == ["baseline", "shortcut_control", "A/A control", "planted-loss control",
                                         "better", "mixed"]
    control = table.iloc[1]
    assert control["kind"] == runs.CONTROL and control["model"] == "intensity statistics" and control["loss"] == ""
    assert control["seeds"] == 1 and np.isnan(control["seed SD"])
    assert control["diff vs baseline"] < 0 and control["diff CI high"] < 0
    assert control["verdict"] == "worse"  # a fitted control has no seed: the baseline's seeds are enough
    text = results.format_results(table)
    assert text.loc[1, "seeds"] == "none (fitted)" and text.loc[1, "vs baseline [95% CI]"].startswith("-0.")


def test_design_controls_are_rows_of_the_table(seeded_runs):
    table = results.results_table(seeded_runs).set_index("experiment")
    neg, pos = table.loc["A/A control"], table.loc["planted-loss control"]
    assert neg["kind"] == pos["kind"] == results.DESIGN_CONTROL
    assert neg["p-value"] > 0.05 and neg["verdict"].startswith("no difference larger than")
    assert pos["verdict"] == "worse" and pos["diff vs baseline"] < -pos["MDD"]
    assert "A/A control" not in results.results_table(seeded_runs, controls=False)["experiment"].tolist()


# ----------------------------------------------------------------------------- the verdict


@pytest.mark.parametrize("case, args, called, label, words", [
    ("called better", (0.03, 0.01, 0.05, 0.01, 0.03, 3, 3), True, "better", "[+0.010, +0.050] of the difference"),
    ("called worse", (-0.03, -0.05, -0.01, 0.002, 0.03, 3, 3), True, "worse", "excludes 0 (p = 0.002)"),
    ("not called", (0.02, -0.01, 0.05, 0.2, 0.031, 3, 3), False, "no difference larger than 0.031 shown",
     "a true difference of 0.031 would have been called 80% of the time"),
    ("one seed against three", (0.03, math.nan, math.nan, math.nan, math.nan, 1, 3), False, "not tested: 1 seed",
     "needs 2 a side"),
    ("a fitted control against three", (0.03, 0.01, 0.05, 0.01, 0.03, 1, 3, True), True, "better", "excludes 0"),
    ("a fitted control against one", (0.03, 0.01, 0.05, 0.01, 0.03, 1, 1, True), False, "not tested: 1 seed",
     "1 seed"),
    ("another test set", (math.nan, math.nan, math.nan, math.nan, math.nan, 3, 3), False, "not compared",
     "same test images"),
])
def test_verdict_follows_the_design(case, args, called, label, words):
    v = verdict(*args)
    assert (v.called, v.label) == (called, label), case
    assert words in v.reason, (case, v.reason)
    assert v.direction == (0 if not called else 1 if label == "better" else -1)
    assert "same" not in v.label and "as well" not in v.reason  # a null result never reads as equality


def test_the_verdict_rule_is_stated_where_it_is_applied():
    for phrase in ("t-test", "seed variance", "test-patient variance", "not tested", "80% probability"):
        assert phrase in VERDICT_RULE


# ----------------------------------------------------------------------------- conclusions


def test_conclusions_are_made_from_the_numbers(study):
    table = results.results_table(study, n_bootstrap=100)
    words = conclusions.conclusions(table)
    assert words.rule == results.VERDICT_RULE
    better = next(line for line in words.comparisons if line.startswith("better "))
    row = table.set_index("experiment").loc["better"]
    for number in (row["mean AUROC"], row["diff CI low"], row["diff vs baseline"]):
        assert f"{abs(number):.3f}" in better
    assert "Verdict: better than the baseline" in better
    mixed = next(line for line in words.comparisons if line.startswith("mixed "))
    mdd = table.set_index("experiment").loc["mixed", "MDD"]
    assert f"Verdict: no difference larger than {mdd:.3f} shown, because" in mixed
    assert f"a true difference of {mdd:.3f} would have been called 80% of the time" in mixed
    # the design's controls come first, each with what it should give
    negative, positive = words.comparisons[:2]
    assert negative.startswith("A/A control") and "expected no difference" in negative and "as it should" in negative
    assert positive.startswith("planted-loss control") and "the verdict is worse, as it should" in positive
    control, = words.controls
    assert control.startswith("The baseline's mean AUROC") and "above that of shortcut_control" in control
    assert "a logistic regression per finding):" in control  # its run folder does not say what it sees
    # change a number and the sentence changes with it, verdict included
    changed = table.copy()
    i = changed.index[changed["experiment"] == "better"][0]
    changed.loc[i, ["diff CI low", "p-value"]] = [-0.004, 0.2]
    again = next(line for line in conclusions.conclusions(changed).comparisons if line.startswith("better "))
    assert again != better and "-0.004" in again and "p = 0.200" in again
    assert f"Verdict: no difference larger than {row['MDD']:.3f} shown, because the 95% CI" in again
    # the control above the baseline reads the other way; a gap not shown is never "about as well"
    j = changed.index[changed["experiment"] == "shortcut_control"][0]
    changed.loc[j, ["diff vs baseline", "diff CI low", "diff CI high", "p-value"]] = [0.05, 0.02, 0.08, 0.01]
    assert "0.050 below that of shortcut_control" in conclusions.conclusions(changed).controls[0]
    assert "intensity statistics alone beat the baseline" in conclusions.conclusions(changed).controls[0]
    changed.loc[j, ["diff CI low", "p-value"]] = [-0.02, 0.3]
    null = conclusions.conclusions(changed).controls[0]
    assert "no evidence that global intensity statistics do as well" in null and "about as well" not in null
    # two controls, two sentences, each in its own words
    k = changed.index[changed["experiment"] == "shortcut_control"][0]
    meta = changed.loc[[k]].assign(experiment="metadata_control", model="metadata",
                                   sees="no pixel: only view_position, age, sex")
    both = conclusions.conclusions(pd.concat([changed, meta], ignore_index=True)).controls
    assert len(both) == 2 and "that of shortcut_control" in both[0] and "that of metadata_control" in both[1]
    assert "intensity statistics" in both[0] and "metadata" not in both[0]
    assert "no evidence that the metadata do as well" in both[1] and "sees no pixel" in both[1]
    assert "intensity" not in both[1] and "grey-level" not in both[1]
    assert all(line in conclusions.conclusions(pd.concat([changed, meta], ignore_index=True)).lines for line in both)
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


# ----------------------------------------------------------------------------- chosen findings


@pytest.fixture()
def one_finding_lost(tmp_path):
    """Three seeds each of a baseline and an arm on 300 images of 150 patients: the arm's scores
    are the baseline's seed for seed, except Effusion's, which are random (its ranking lost)."""
    from conftest import _fake_run, seeded_scores

    rng = np.random.default_rng(7)
    n = 300
    targets = (rng.random((n, len(FINDINGS))) < 0.25).astype(np.float32)
    targets[:2] = 1 - targets[2:4]
    targets[:, FINDINGS.index("Hernia")] = 0.0  # a finding without positives: left out of every mean
    ids = np.array([f"img_{i:03d}.png" for i in range(n)])
    root = tmp_path / "runs"
    k = FINDINGS.index("Effusion")
    base_dirs, arm_dirs = [], []
    for seed in range(3):
        scores = seeded_scores(targets, 0.6, seed)
        lost = scores.copy()
        lost[:, k] = np.random.default_rng(50 + seed).random(n)
        base_dirs.append(_fake_run(root, "baseline", scores, targets, ids, seed=seed))
        arm_dirs.append(_fake_run(root, "never_reported_effusion", lost, targets, ids, seed=seed))
    return base_dirs, arm_dirs


@pytest.mark.filterwarnings("ignore:AUROC undefined")
def test_a_finding_whose_ranking_is_lost_is_worse_alone_and_not_the_others(one_finding_lost):
    from cxrlib.inference import compare_arms
    from cxrlib.metrics import auroc

    base_dirs, arm_dirs = one_finding_lost
    groups = {"Effusion alone": ["Effusion"], "the rest": [f for f in FINDINGS if f != "Effusion"],
              "Edema": ["Edema"], "Hernia": ["Hernia"]}
    table = results.finding_comparison(base_dirs, arm_dirs, groups).set_index("comparison")
    k = FINDINGS.index("Effusion")
    pred = [runs.load_predictions(d) for d in base_dirs], [runs.load_predictions(d) for d in arm_dirs]
    y = pred[0][0]["targets"]
    by_hand = [np.mean([auroc(y, p["scores"])[k] for p in side]) for side in pred]
    lost = table.loc["Effusion alone"]
    assert lost["findings"] == 1 and lost["base AUROC"] == pytest.approx(by_hand[0])
    assert lost["other AUROC"] == pytest.approx(by_hand[1]) and abs(lost["other AUROC"] - 0.5) < 0.1
    assert lost["diff vs baseline"] == pytest.approx(by_hand[1] - by_hand[0])
    assert lost["verdict"] == results.WORSE and lost["base CI low"] > 0.5
    # the other findings' scores did not change: no difference, for their mean and for one of them
    rest, edema = table.loc["the rest"], table.loc["Edema"]
    assert rest["findings"] == 12  # Hernia has no positive: out of the mean
    assert rest["diff vs baseline"] == pytest.approx(0.0, abs=1e-12) and edema["diff vs baseline"] == pytest.approx(0.0)
    assert rest["verdict"].startswith(results.NO_DIFFERENCE.removesuffix(" shown"))
    assert edema["verdict"].startswith("no difference") and not edema["diff CI low"] > 0
    assert table.loc["Hernia", "verdict"] == results.NOT_COMPARED and "positive" in table.loc["Hernia", "reason"]
    # the restriction is compare_arms on those columns alone, nothing else
    cols = [FINDINGS.index(f) for f in groups["the rest"]]
    direct = compare_arms(y[:, cols], [p["scores"][:, cols] for p in pred[1]], [p["scores"][:, cols] for p in pred[0]],
                          patient_ids=pred[0][0]["patient_ids"], label_names=groups["the rest"])
    assert rest["p-value"] == pytest.approx(direct["p_value"]) and rest["MDD"] == pytest.approx(direct["mdd"])
    # over all 14 the loss is diluted into the mean; restricted, Effusion alone carries it
    whole = results.compare_experiments(base_dirs, arm_dirs)
    alone = results.compare_experiments(base_dirs, arm_dirs, findings=["Effusion"])
    assert alone["diff"] == pytest.approx(lost["diff vs baseline"])
    assert whole["diff"] == pytest.approx(alone["diff"] / 13)
    text = results.format_finding_comparison(table.reset_index(), "baseline", "never_reported_effusion")
    assert text.loc["Effusion alone", "verdict"] == results.WORSE
    assert text.loc["Effusion alone", "never_reported_effusion - baseline [95% CI]"] == results.estimate_text(
        lost["diff vs baseline"], lost["diff CI low"], lost["diff CI high"], signed=True)
    with pytest.raises(ValueError, match="Efusion"):
        results.compare_experiments(base_dirs, arm_dirs, findings=["Efusion"])
