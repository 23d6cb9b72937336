"""Label parsing on the real Data_Entry table and on tables with bad rows."""
from __future__ import annotations

import numpy as np
import pytest

from cxrlib.data.chestxray14 import find_data_entry, read_data_entry
from cxrlib.labels import FINDINGS, parse_finding_labels


def test_parse_order_and_no_finding():
    y = parse_finding_labels("Effusion|Mass")
    assert y.dtype == np.float32 and y.shape == (14,)
    assert np.flatnonzero(y).tolist() == [FINDINGS.index("Effusion"), FINDINGS.index("Mass")]
    assert parse_finding_labels("No Finding").sum() == 0
    y15 = parse_finding_labels("No Finding", include_no_finding=True)
    assert y15.shape == (15,) and y15[14] == 1 and y15[:14].sum() == 0
    assert parse_finding_labels("Infiltrate")[FINDINGS.index("Infiltration")] == 1


def test_real_table_counts(cxr14_sample):
    table = read_data_entry(find_data_entry(cxr14_sample))
    assert table.path.name == "Data_Entry_2017_v2020.csv"
    assert len(table) == 112_120
    assert len(np.unique(table.patient_ids)) == 30_805
    assert table.targets.shape == (112_120, 14)
    # No Finding rows are all-zero; every other row has at least one positive.
    assert int((table.targets.sum(1) == 0).sum()) == 60_361
    assert int(table.targets[:, FINDINGS.index("Hernia")].sum()) == 227
    t15 = read_data_entry(find_data_entry(cxr14_sample), include_no_finding=True)
    assert t15.label_names[-1] == "No Finding"
    assert np.array_equal(t15.targets[:, 14] == 1, table.targets.sum(1) == 0)


def test_unknown_label_names_label_and_row(tmp_path):
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID\n"
        "00000001_000.png,Cardiomegaly,0,1\n"
        "00000002_000.png,Effusion|Pneumonitis,0,2\n"
    )
    with pytest.raises(ValueError) as err:
        read_data_entry(csv)
    msg = str(err.value)
    assert "Pneumonitis" in msg and "row 3" in msg and "00000002_000.png" in msg


def test_missing_column_named(tmp_path):
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text("Image Index,Finding Labels\n00000001_000.png,Mass\n")
    with pytest.raises(ValueError, match="Patient ID"):
        read_data_entry(csv)
