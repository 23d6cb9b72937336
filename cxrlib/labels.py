"""The 14 ChestX-ray14 findings in CheXNet order, their spelling variants, and label parsing.

Every target vector in cxrlib uses this order (DESIGN.md's data contract), so a column index
means the same finding in a dataset, a model output, a metrics table and a heatmap.
"""
from __future__ import annotations

import numpy as np

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
NUM_FINDINGS = len(FINDINGS)

# Spellings seen in the release itself: BBox_List_2017.csv says "Infiltrate", and some
# tables and papers write "Pleural Thickening" with a space.
ALIASES: dict[str, str] = {
    "Infiltrate": "Infiltration",
    "Pleural Thickening": "Pleural_Thickening",
    "Pleural_thickening": "Pleural_Thickening",
    "No_Finding": NO_FINDING,
}

_INDEX = {name: i for i, name in enumerate(FINDINGS)}


def canonical(name: str) -> str:
    """The CheXNet spelling of a finding name, or ``No Finding``; ValueError if unknown."""
    name = name.strip()
    name = ALIASES.get(name, name)
    if name in _INDEX or name == NO_FINDING:
        return name
    raise ValueError(
        f"unknown finding {name!r}: expected one of {', '.join(FINDINGS)}, or {NO_FINDING!r}"
    )


def finding_index(name: str) -> int:
    """Column of a finding in a 14-long target vector (aliases accepted)."""
    name = canonical(name)
    if name == NO_FINDING:
        raise ValueError(f"{NO_FINDING!r} has no column among the 14 findings")
    return _INDEX[name]


def label_names(include_no_finding: bool = False) -> list[str]:
    """Output names of a model: the 14 findings, plus ``No Finding`` as a 15th when asked."""
    return list(FINDINGS) + ([NO_FINDING] if include_no_finding else [])


def parse_finding_labels(text: str, include_no_finding: bool = False, where: str = "") -> np.ndarray:
    """Turn a ``Finding Labels`` cell ('Effusion|Mass', 'No Finding') into a float32 target.

    ``No Finding`` is the all-zero vector, or a 15th positive column when
    ``include_no_finding``. An unknown label raises ValueError naming it and ``where``
    (for example the file and row), because a silently dropped label is a wrong target.
    """
    target = np.zeros(NUM_FINDINGS + int(include_no_finding), dtype=np.float32)
    parts = [p.strip() for p in str(text).split("|") if p.strip()]
    if not parts:
        raise ValueError(f"empty finding label{' at ' + where if where else ''}: expected names or {NO_FINDING!r}")
    for part in parts:
        try:
            name = canonical(part)
        except ValueError as err:
            raise ValueError(f"{err}{' (at ' + where + ')' if where else ''}") from None
        if name == NO_FINDING:
            if len(parts) > 1:
                raise ValueError(f"{NO_FINDING!r} combined with findings in {text!r}{' at ' + where if where else ''}")
            if include_no_finding:
                target[NUM_FINDINGS] = 1.0
        else:
            target[_INDEX[name]] = 1.0
    return target


def targets_with_no_finding(targets: np.ndarray) -> np.ndarray:
    """Append the No Finding column (1 where no finding is positive) to ``[N, 14]`` targets."""
    targets = np.asarray(targets, dtype=np.float32)
    none = (targets[:, :NUM_FINDINGS].sum(axis=1) == 0).astype(np.float32)
    return np.concatenate([targets[:, :NUM_FINDINGS], none[:, None]], axis=1)
