"""Each check passes a right answer and names the mistake in typical wrong ones."""
import numpy as np
import torch
import torch.nn.functional as F

from cxrlib import exercises


# ---------------------------------------------------------------- weighted BCE

def right_bce(logits, targets, pos_fraction):
    p = torch.as_tensor(pos_fraction, dtype=logits.dtype)
    return -((1 - p) * targets * F.logsigmoid(logits) + p * (1 - targets) * F.logsigmoid(-logits)).mean()


def swapped_bce(logits, targets, pos_fraction):
    p = torch.as_tensor(pos_fraction, dtype=logits.dtype)
    return -(p * targets * F.logsigmoid(logits) + (1 - p) * (1 - targets) * F.logsigmoid(-logits)).mean()


def summed_bce(logits, targets, pos_fraction):
    return right_bce(logits, targets, pos_fraction) * logits.numel()


def plain_bce(logits, targets, pos_fraction):
    return F.binary_cross_entropy_with_logits(logits, targets)


def test_weighted_bce_right_and_wrong():
    ok = exercises.check_weighted_bce(right_bce)
    assert ok and ok.cases == 3 and "all 3 cases right" in str(ok)
    swapped = exercises.check_weighted_bce(swapped_bce)
    assert not swapped and "wrong way round" in str(swapped)
    assert "summed" in str(exercises.check_weighted_bce(summed_bce))
    assert "plain BCE" in str(exercises.check_weighted_bce(plain_bce))
    assert "sign is wrong" in str(exercises.check_weighted_bce(lambda lg, t, p: -right_bce(lg, t, p)))


def test_weighted_bce_naive_log_sigmoid_is_caught_on_large_logits():
    def naive(logits, targets, pos_fraction):
        p = torch.as_tensor(pos_fraction, dtype=logits.dtype)
        q = torch.sigmoid(logits)
        return -((1 - p) * targets * torch.log(q) + p * (1 - targets) * torch.log(1 - q)).mean()

    result = exercises.check_weighted_bce(naive)
    assert not result and "large logits" in str(result) and "logsigmoid" in str(result)


def test_a_raising_function_is_reported_not_raised():
    def broken(logits, targets, pos_fraction):
        raise NotImplementedError("write me")

    result = exercises.check_weighted_bce(broken)
    assert not result and "NotImplementedError: write me" in str(result)
    assert "cases wrong" in result._repr_markdown_()


# ---------------------------------------------------------------- leakage

def test_leakage_right_and_wrong():
    assert exercises.check_leakage(lambda tr, te: set(tr["patient_id"]) & set(te["patient_id"]))
    by_image = exercises.check_leakage(lambda tr, te: set(tr["image_id"]) & set(te["image_id"]))
    assert not by_image and "image ids were compared" in str(by_image)
    count = exercises.check_leakage(lambda tr, te: len(set(tr["patient_id"]) & set(te["patient_id"])))
    assert not count and "return the SET" in str(count)
    first_only = exercises.check_leakage(
        lambda tr, te: set(list(set(tr["patient_id"]) & set(te["patient_id"]))[:1]))
    assert not first_only and "were missed" in str(first_only)


# ---------------------------------------------------------------- AUROC

def right_auroc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    return ((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg))


def test_auroc_right_and_wrong():
    assert exercises.check_auroc(right_auroc)
    flipped = exercises.check_auroc(lambda y, s: 1 - right_auroc(y, s))
    assert "reversed" in str(flipped)
    strict = exercises.check_auroc(lambda y, s: (s[y == 1][:, None] > s[y == 0]).mean())
    assert not strict and "counts as 0" in str(strict)
    # passes the cases without a (positive, negative) tie; the two with one fail
    assert [f.split(":")[0] for f in strict.failures] == ["ties across classes", "scores that are not probabilities"]
    acc = exercises.check_auroc(lambda y, s: ((s >= 0.5) == (y == 1)).mean())
    assert "accuracy at a threshold" in str(acc)


def test_auroc_from_ranks_passes():
    from scipy.stats import rankdata

    def by_ranks(y, s):  # Mann-Whitney: the positives' rank sum, midranks for ties
        r = rankdata(s)
        n1, n0 = (y == 1).sum(), (y == 0).sum()
        return (r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)

    assert exercises.check_auroc(by_ranks)


# ---------------------------------------------------------------- threshold

def right_threshold(y, s, target):
    pos = np.sort(s[y == 1])[::-1]
    return pos[int(np.ceil(target * len(pos))) - 1]


def test_threshold_right_and_wrong():
    assert exercises.check_threshold(right_threshold)
    floor = exercises.check_threshold(lambda y, s, t: np.sort(s[y == 1])[::-1][max(int(t * (y == 1).sum()) - 1, 0)])
    assert not floor and "below the target" in str(floor)
    lowest = exercises.check_threshold(lambda y, s, t: s[y == 1].min())
    assert not lowest and "not the highest threshold" in str(lowest)
    # a threshold just under the right score makes the same calls: accepted
    assert exercises.check_threshold(lambda y, s, t: right_threshold(y, s, t) - 1e-9)
