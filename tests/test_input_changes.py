"""An input that changes under its output is noticed: rows removed, renamed or reordered
between runs are refused (or, with --force, reconciled: the records of vanished ids dropped,
moved rows renumbered), and an input rewritten while it is sent stops the run before a row
read after the change is sent. Rows added to an input are no change: they are sent."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

from .conftest import SimulatorProcess, read_jsonl, vbatch_cmd, write_jsonl


def rows(ids: list[int]) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in ids]


def cli(source: Path, out: Path, simulator: SimulatorProcess, *extra: str
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                   "--max-tokens", "2", *extra),
        capture_output=True, text=True, timeout=120)


def test_rows_removed_or_renamed_are_refused_then_dropped_with_force(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(list(range(10))))
    out = tmp_path / "out.jsonl"
    assert cli(source, out, simulator).returncode == 0
    before = out.read_bytes()
    # r3 and r7 removed, r9 renamed to r90 (its prompt kept).
    changed = [r for r in rows(list(range(9))) if r["id"] not in ("r3", "r7")]
    write_jsonl(source, [*changed, {"id": "r90", "prompt": "question 9"}])
    simulator.reset()
    refused = cli(source, out, simulator)
    assert refused.returncode == 2, refused.stderr
    assert "3 records are for ids no longer in it" in refused.stderr
    assert "'r3'" in refused.stderr and "Traceback" not in refused.stderr
    assert simulator.stats()["requests_seen"] == 0 and out.read_bytes() == before
    forced = cli(source, out, simulator, "--force", "--ordered")
    assert forced.returncode == 0, forced.stderr
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [r["id"] for r in read_jsonl(source)]
    assert [r["index"] for r in records] == list(range(8))
    assert simulator.stats()["requests_seen"] == 1


def test_reordered_rows_are_refused_then_renumbered_with_force(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(list(range(6))))
    out = tmp_path / "out.jsonl"
    assert cli(source, out, simulator, "--ordered").returncode == 0
    write_jsonl(source, rows([5, 4, 3, 2, 1, 0]))
    simulator.reset()
    refused = cli(source, out, simulator, "--ordered")
    assert refused.returncode == 2 and "reordered" in refused.stderr, refused.stderr
    forced = cli(source, out, simulator, "--ordered", "--force")
    assert forced.returncode == 0, forced.stderr
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert [r["index"] for r in records] == list(range(6))
    assert simulator.stats()["requests_seen"] == 0


def test_rows_added_to_the_input_are_sent_without_a_word(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(list(range(4))))
    out = tmp_path / "out.jsonl"
    assert cli(source, out, simulator).returncode == 0
    write_jsonl(source, rows(list(range(7))))
    again = cli(source, out, simulator)
    assert again.returncode == 0, again.stderr
    assert Counter(r["id"] for r in read_jsonl(out)) == Counter(f"r{i}" for i in range(7))


def test_an_input_rewritten_while_it_is_sent_stops_the_run_and_nothing_doubles(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(latency=0.02)
    count = 3000
    source = write_jsonl(tmp_path / "in.jsonl", rows(list(range(count))))
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                   "--max-tokens", "2", "--concurrency", "8"),
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (not out.exists() or len(out.read_bytes().splitlines()) < 100) and (
            time.monotonic() < deadline):
        time.sleep(0.05)
    # Rewritten in place, reversed and grown: every id now sits at another row.
    with open(source, "w") as handle:
        for row in rows(list(range(count + 500))[::-1]):
            handle.write(json.dumps(row) + "\n")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert "changed while its rows were being sent" in stderr and "Traceback" not in stderr
    kept = read_jsonl(out)
    assert 0 < len(kept) < count and max(Counter(r["id"] for r in kept).values()) == 1
    simulator.configure(latency=0.0)
    again = cli(source, out, simulator, "--force")
    assert again.returncode == 0, again.stderr
    records = read_jsonl(out)
    assert Counter(r["id"] for r in records) == Counter(f"r{i}" for i in range(count + 500))
    position = {row["id"]: i for i, row in enumerate(read_jsonl(source))}
    assert all(r["index"] == position[r["id"]] for r in records)
