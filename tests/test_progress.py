"""Progress events: written only when asked, read back whole, told as lines."""
from __future__ import annotations

import json

from cxrlib import progress


def test_emit_writes_only_when_a_file_is_named(tmp_path, monkeypatch):
    log = tmp_path / "progress.jsonl"
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.emit("reused", "baseline")
    assert not log.exists()
    monkeypatch.setenv(progress.ENV, str(log))
    progress.emit("reused", "baseline")
    progress.emit("finished", "fpn", mean_auroc=0.71234)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["event"], e["run"]) for e in events] == [("reused", "baseline"), ("finished", "fpn")]


def test_describe_estimates_the_time_left():
    line = progress.describe({"event": "epoch", "run": "two_stage", "stage": "local", "stage_index": 1, "n_stages": 3,
                              "epoch": 1, "epochs": 2, "done": 3, "total": 5, "ran": 3, "seconds": 30.0})
    # 10 s per epoch so far, two epochs of the plan left
    assert line == "two_stage: epoch 1/2 [local, stage 2/3], 30 s, about 20 s left"
    last = progress.describe({"event": "epoch", "run": "b", "epoch": 3, "epochs": 3, "done": 3, "total": 3, "ran": 3,
                              "seconds": 125.0})
    assert last == "b: epoch 3/3, 2 min 05 s, finishing"
    assert progress.describe({"event": "start", "run": "b", "total": 4, "stages": []}) == "b: training, 4 epochs"
    assert progress.describe({"event": "something else", "run": "b"}) is None


def test_watcher_passes_whole_lines_and_skips_damaged_ones(tmp_path):
    log = tmp_path / "p.jsonl"
    seen: list[str] = []
    with progress.Watcher(log, seen.append, prefix="> ", interval=0.05) as watcher:
        whole = json.dumps({"event": "reused", "run": "a"}) + "\n"
        log.write_text("not json\n" + whole[:10])  # a line cut in the middle of its writing
        watcher._drain()
        assert seen == []
        with open(log, "a") as f:
            f.write(whole[10:])
    assert seen == ["> a: finished earlier with the same config, reused"]
