"""Programs (several calls per row) against the server doubles: every row's program at once
through one pool, calls journaled and replayed after kill -9, failures kept in their row
(the real server's tests are in test_vllm_programs.py)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import vbatch
from vbatch import ConfigError, RunConfig

from .conftest import InProcessServer, read_jsonl, run_cli, vbatch_cmd, write_jsonl

THREE_CALLS = '''
async def solve(row, llm):
    draft = await llm.chat("Draft: " + row["prompt"], max_tokens=6)
    votes = await llm.chat("Judge: " + draft.text, n=3, choice=["correct", "wrong"])
    final = await llm.chat("Revise: " + draft.text + " " + votes.texts[0], max_tokens=4)
    return {"draft": draft.text, "votes": votes.texts, "final": final.text}
'''


def program_file(tmp_path: Path, source: str = THREE_CALLS, name: str = "prog.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def rows(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(count)])


async def two_calls(row: dict[str, Any], llm: Any) -> dict[str, Any]:
    answer = await llm.chat(row["prompt"], max_tokens=5)
    verdict = await llm.chat("Is this right? " + answer.text, choice=["yes", "no"])
    return {"answer": answer.text, "verdict": verdict.parsed}


def test_every_rows_program_runs_through_one_pool(fake_server: InProcessServer,
                                                  tmp_path: Path) -> None:
    fake_server.configure(latency=0.01, keep_requests=10_000)
    out = tmp_path / "out.jsonl"
    result = fake_server.run(RunConfig(input=rows(tmp_path, 200), output=out,
                                       base_url=fake_server.url, quiet=True, temperature=0,
                                       concurrency=64, program=two_calls))
    records = read_jsonl(out)
    assert len(records) == 200 and {r["status"] for r in records} == {"ok"}
    assert all(r["calls"] == 2 and r["result"]["verdict"] in ("yes", "no") for r in records)
    assert result.stats.calls == 400 and "calls: 400 (2.0 per row)" in \
        result.stats.summary_text()
    # No stage barrier: judges were sent while other rows' first calls were still waiting.
    sent = [r["messages"][-1]["content"] for r in fake_server.requests()
            if r.get("max_tokens") != 1]
    first_judge = next(i for i, text in enumerate(sent) if text.startswith("Is this right?"))
    assert first_judge < 200 - 64
    assert fake_server.stats()["peak_in_flight"] <= 64
    usage = records[0]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert not (tmp_path / "out.jsonl.calls.jsonl").exists()
    from vbatch.report.data import load_report_data
    from vbatch.report.page import _summary

    assert ("program calls", "400 (2.0 per row)") in _summary(load_report_data(out))


def test_a_rows_later_calls_go_ahead_of_other_rows_first_calls(fake_server: InProcessServer,
                                                                tmp_path: Path) -> None:
    fake_server.configure(latency=0.005, keep_requests=100)
    fake_server.run(RunConfig(input=rows(tmp_path, 6), output=tmp_path / "out.jsonl",
                              base_url=fake_server.url, quiet=True, temperature=0,
                              concurrency=1, program=two_calls))
    sent = [r["messages"][-1]["content"] for r in fake_server.requests()
            if r.get("max_tokens") != 1]
    # One worker, two active rows: each row's judge is sent before the next row's draft.
    assert [text.startswith("Is this right?") for text in sent] == [False, True] * 6


def test_the_queue_sends_urgent_items_first_in_their_order() -> None:
    from vbatch.engine.items import WorkItem
    from vbatch.engine.lanes import CallQueue

    queue = CallQueue(maxsize=8)
    for name, urgent in [("a1", False), ("a2", False), ("u1", True), ("u2", True)]:
        queue.put_nowait(WorkItem(name, 0, b"{}", urgent=urgent))
    queue.put_nowait(None)
    queue.put_nowait(WorkItem("u3", 0, b"{}", urgent=True))
    taken = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [item.row_id if item else None for item in taken] == [
        "u1", "u2", "u3", "a1", "a2", None]
    assert queue.empty()


def test_a_foreign_file_at_the_journals_name_is_refused(fake_server: InProcessServer,
                                                        tmp_path: Path) -> None:
    journal = tmp_path / "out.jsonl.calls.jsonl"
    journal.write_text("my notes\nmore\n")
    with pytest.raises(vbatch.OutputError, match="is not a calls journal of vbatch's"):
        fake_server.run(RunConfig(input=rows(tmp_path, 2), output=tmp_path / "out.jsonl",
                                  base_url=fake_server.url, quiet=True, program=two_calls))
    assert journal.read_text() == "my notes\nmore\n"


def test_a_raising_program_fails_only_its_row(fake_server: InProcessServer,
                                              tmp_path: Path) -> None:
    async def picky(row: dict[str, Any], llm: Any) -> str:
        answer = await llm.chat(row["prompt"], max_tokens=3)
        if row["id"] == "r3":
            raise ValueError("not this one")
        if row["id"] == "r4":
            return {1, 2}  # type: ignore[return-value]
        return answer.text  # type: ignore[no-any-return]

    out = tmp_path / "out.jsonl"
    result = fake_server.run(RunConfig(input=rows(tmp_path, 10), output=out,
                                       base_url=fake_server.url, quiet=True, program=picky))
    records = {r["id"]: r for r in read_jsonl(out)}
    assert result.exit_code == 1 and len(records) == 10
    assert records["r3"]["error"] == {"type": "program_error", "exception": "ValueError",
                                      "message": "ValueError: not this one (at call 0:0)",
                                      "status_code": None, "call": "0:0"}
    assert "the program returned a set, which JSON cannot hold" in \
        records["r4"]["error"]["message"]
    assert all(records[f"r{i}"]["status"] == "ok" for i in (0, 1, 2, 5, 6, 7, 8, 9))


def test_a_failed_call_raises_in_the_program_which_may_catch_it(
        fake_server: InProcessServer, tmp_path: Path) -> None:
    async def careful(row: dict[str, Any], llm: Any) -> str:
        try:
            await llm.chat("SIM_REJECT " + row["prompt"])
        except vbatch.CallFailedError as exc:
            return f"caught {exc.error_type}"
        return "sent"

    async def careless(row: dict[str, Any], llm: Any) -> str:
        await llm.chat("SIM_REJECT " + row["prompt"])
        return "sent"

    out = tmp_path / "out.jsonl"
    fake_server.run(RunConfig(input=rows(tmp_path, 2), output=out, base_url=fake_server.url,
                              quiet=True, program=careful))
    assert {r["result"] for r in read_jsonl(out)} == {"caught http_error"}
    fake_server.run(RunConfig(input=rows(tmp_path, 2), output=tmp_path / "b.jsonl",
                              base_url=fake_server.url, quiet=True, program=careless))
    for record in read_jsonl(tmp_path / "b.jsonl"):
        assert record["error"]["exception"] == "CallFailedError"
        assert "llm.chat (call 0:0) failed: http_error" in record["error"]["message"]


def test_rollouts_and_kept_calls(fake_server: InProcessServer, tmp_path: Path) -> None:
    async def sample(row: dict[str, Any], llm: Any) -> str | None:
        return (await llm.chat(row["prompt"], max_tokens=4)).text  # type: ignore[no-any-return]

    out = tmp_path / "out.jsonl"
    fake_server.run(RunConfig(input=rows(tmp_path, 3), output=out, base_url=fake_server.url,
                              quiet=True, program=sample, rollouts=4, keep_calls=True))
    for record in read_jsonl(out):
        assert len(record["result"]) == 4 and len(set(record["result"])) == 4
        seeds = [call["request"]["seed"] for call in record["call_records"]]
        assert sorted(seeds) == [0, 1, 2, 3]
        assert record["calls"] == 4


def test_a_program_that_cannot_load_is_one_line_before_anything_is_sent(
        tmp_path: Path) -> None:
    source = rows(tmp_path, 2)
    bad = program_file(tmp_path, "import no_such_module_here\n", "bad.py")
    sync = program_file(tmp_path, "def solve(row, llm):\n    return 1\n", "sync.py")
    cases = [(f"{bad}:solve", "cannot import"), (f"{sync}:missing", "has no function"),
             (f"{sync}:solve", "must be an async function"), ("nothing", "is not FILE.py"),
             (f"{tmp_path}/none.py:f", "no such file")]
    for reference, words in cases:
        done = run_cli("run", str(source), "-o", str(tmp_path / "o.jsonl"), "--base-url",
                       "http://127.0.0.1:9/v1", "--program", reference)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "--program" in lines[0], lines
    with pytest.raises(ConfigError, match="--rollouts is for a --program run"):
        RunConfig(input=source, output=tmp_path / "o.jsonl", rollouts=2)


def test_a_dict_result_becomes_columns(fake_server: InProcessServer) -> None:
    frame = pd.DataFrame({"prompt": ["a", "b"], "answer": ["given", "given"]})
    out = vbatch.generate(frame, base_url=fake_server.url, transport=fake_server.transport,
                          program=two_calls, progress=False)
    assert list(out["answer"]) == ["given", "given"]
    assert out["answer_result"].str.startswith("w").all()
    assert set(out["verdict"]) <= {"yes", "no"} and list(out["calls"]) == [2, 2]


def test_a_changed_call_is_sent_again_and_counted(fake_server: InProcessServer,
                                                  tmp_path: Path) -> None:
    calls = tmp_path / "out.jsonl.calls.jsonl"
    async def first(row: dict[str, Any], llm: Any) -> str:
        await llm.chat(row["prompt"], max_tokens=3)
        raise RuntimeError("stop here")

    out = tmp_path / "out.jsonl"
    fake_server.run(RunConfig(input=rows(tmp_path, 2), output=out, base_url=fake_server.url,
                              quiet=True, program=first))
    assert calls.exists() and len(calls.read_text().splitlines()) == 2

    async def second(row: dict[str, Any], llm: Any) -> str:
        await llm.chat(row["prompt"], max_tokens=3)
        return (await llm.chat("then " + row["prompt"])).text  # type: ignore[no-any-return]

    fake_server.reset()
    result = fake_server.run(RunConfig(input=rows(tmp_path, 2), output=out, quiet=True,
                                       base_url=fake_server.url, program=second,
                                       retry_failed=True, force=True))
    assert result.stats.calls_replayed == 2 and result.stats.calls_changed == 0
    assert sorted(r["messages"][-1]["content"] for r in fake_server.requests()
                  if r.get("max_tokens") != 1) == ["then question 0", "then question 1"]
    assert not calls.exists()


@pytest.mark.timeout(300)
def test_kill_9_then_rerun_pays_no_call_twice(simulator: Any, tmp_path: Path) -> None:
    simulator.configure(latency=0.02, keep_requests=100_000)
    source = rows(tmp_path, 2000)
    program = program_file(tmp_path)
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "--base-url", simulator.url, "--program",
            f"{program}:solve", "--temperature", "0", "--concurrency", "48", "--quiet"]
    kills = 0
    rng = random.Random(7)
    for _ in range(3):
        process = subprocess.Popen(vbatch_cmd(*args))
        time.sleep(rng.uniform(1.0, 2.5))
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    assert kills >= 1
    done = run_cli(*args, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(2000))
    assert max(Counter(r["id"] for r in records).values()) == 1
    sent = Counter(json.dumps(r["messages"]) + str(r.get("n")) for r in simulator.requests()
                   if r.get("max_tokens") != 1)
    twice = sum(count - 1 for count in sent.values())
    assert twice <= 48 * kills, twice
    assert simulator.stats()["peak_in_flight"] <= 48
    reference = tmp_path / "reference.jsonl"
    simulator.reset()
    again = run_cli("run", str(source), "-o", str(reference), "--base-url", simulator.url,
                    "--program", f"{program}:solve", "--temperature", "0", "--quiet",
                    timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    expected = {r["id"]: r["result"] for r in read_jsonl(reference)}
    assert {r["id"]: r["result"] for r in records} == expected


@pytest.mark.timeout(400)
def test_100000_rows_of_a_two_call_program_in_flat_memory(simulator: Any,
                                                          tmp_path: Path) -> None:
    program = program_file(tmp_path, '''
async def two(row, llm):
    first = await llm.chat(row["prompt"], max_tokens=2)
    second = await llm.chat("again " + first.text, max_tokens=2)
    return second.text
''')
    peaks = {}
    for count in (5_000, 100_000):
        source = write_jsonl(tmp_path / f"in{count}.jsonl",
                             [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(count)])
        out = tmp_path / f"out{count}.jsonl"
        command = [sys.executable, "-c",
                   "import resource, subprocess, sys; "
                   "code = subprocess.call(sys.argv[1:]); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
                   "sys.exit(code)",
                   *vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                               "--program", f"{program}:two", "--concurrency", "256",
                               "--quiet")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=380)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[count] = int(done.stdout.strip().splitlines()[-1]) / 1024
        assert out.read_bytes().count(b"\n") == count
    assert peaks[100_000] - peaks[5_000] < 40, peaks
    print(f"peak RSS by rows: {peaks}")
