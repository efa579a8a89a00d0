"""The command line: exit codes, bad input, options, help text, Ctrl-C."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import click
import pytest

from vbatch.cli import main

from .conftest import SimulatorProcess, read_jsonl, run_cli, vbatch_cmd, write_jsonl


def test_every_command_and_option_has_help() -> None:
    assert main.help
    for name, command in main.commands.items():
        assert command.help, f"command {name} has no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts} has no help"
    result = run_cli("run", "--help")
    assert result.returncode == 0 and "--concurrency" in result.stdout


# Options that have no default: left out, the server's own applies or the feature is off.
_NO_DEFAULT = {"system", "template", "extra_body", "max_tokens", "temperature", "top_p", "seed",
               "api_key", "stats_json", "error_file", "base_url", "stop", "keep", "quiet",
               "ordered", "retry_failed", "force", "server_args",
               "endpoints_file", "ray_address", "response_format", "schema_field", "program",
               "rerun_if", "time_limit", "token_budget", "max_requests", "cache_dir",
               "keep_calls"}
# The options that say what shape an answer has are one field, response_format.
_FIELD_OF = {"retry_delay": "retry_base_delay", "ray_address": "ray_address",
             **{name: "response_format"
                for name in ("json_schema", "json_object", "regex", "choice", "grammar")}}


def test_every_option_states_the_default_the_code_uses() -> None:
    import dataclasses

    from vbatch import RunConfig
    from vbatch.defaults import DEFAULT_BATCH_LIMITS

    fields = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    command = main.commands["run"]
    # What the command hands on when no option is given.
    parsed = command.make_context("run", ["in.jsonl", "-o", "out.jsonl"]).params
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in ("output", "help"):
            continue
        name = _FIELD_OF.get(str(param.name), str(param.name))
        assert name in fields, f"--{param.name} is no RunConfig field"
        default = fields[name]
        given = parsed[str(param.name)]
        if default in (None, False, ()):
            assert given in (None, False, ()), f"--{param.name}: {given!r}"
            assert name in _NO_DEFAULT or "default" in (param.help or ""), (
                f"--{param.name} does not say what it is when not given")
        else:
            assert given == default, f"--{param.name}: {given!r} != {default!r}"
            assert param.show_default, f"--{param.name} does not show its default"
    seqs = next(p for p in main.commands["run"].params if p.name == "max_num_seqs")
    for build, (sequences, _) in DEFAULT_BATCH_LIMITS.items():
        assert f"{sequences} {build.upper()}" in (getattr(seqs, "help", "") or "")


def test_choice_lists_have_one_home() -> None:
    from vbatch import defaults

    choices = {p.name: tuple(p.type.choices) for p in main.commands["run"].params
               if isinstance(p.type, click.Choice)}
    assert choices["on_overflow"] == defaults.ON_OVERFLOW_POLICIES
    assert choices["on_bad_row"] == defaults.ON_BAD_ROW_POLICIES
    assert choices["log_format"] == defaults.LOG_FORMATS
    assert choices["input_format"] == defaults.INPUT_FORMATS


def test_python_dash_m_and_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and "vbatch" in result.stdout


def test_all_ok_exits_0_with_summary(simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(5)])
    stats = tmp_path / "stats.json"
    result = run_cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
                     simulator.url, "--stats-json", str(stats))
    assert result.returncode == 0, result.stderr
    assert "rows: 5 ok, 0 failed" in result.stderr
    assert "latency: p50" in result.stderr
    summary = json.loads(stats.read_text())
    assert summary["rows_ok"] == 5 and summary["completion_tokens"] == 80
    assert set(summary["latency_s"]) == {"p50", "p95", "p99"}


def test_output_record_fields(simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 7, "prompt": "x y", "topic": "t"}])
    out = tmp_path / "out.jsonl"
    result = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                     "--max-tokens", "3", "--keep", "topic", "--n", "2")
    assert result.returncode == 0, result.stderr
    (record,) = read_jsonl(out)
    assert record["id"] == "7" and record["index"] == 0 and record["status"] == "ok"
    assert isinstance(record["text"], list) and len(record["text"]) == 2
    assert record["finish_reason"] == ["length", "length"]
    assert record["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
    assert record["error"] is None and record["attempts"] == 1
    assert record["latency_s"] >= 0 and record["topic"] == "t"


def test_some_failed_exits_1_and_groups_reasons(simulator: SimulatorProcess, tmp_path: Path
                                                 ) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "SIM_REJECT"}, {"prompt": "ok"}])
    result = run_cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
                     simulator.url)
    assert result.returncode == 1
    assert "1 x http_error (HTTP 400): simulated rejection" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"prompt": "a"}\n{"prompt": "b"\n', ":2: malformed JSON"),
        (b'{"prompt": "a"}\n{"text": "b"}\n', ":2: field 'prompt': missing"),
        (b'{"prompt": "a"}\n{"prompt": "\xff"}\n', ":2: non-UTF-8 byte 0xff"),
        (b'{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n',
         ":2: field 'id': duplicate id 'x', first seen at"),
        (b'{"id": [1], "prompt": "a"}\n', ":1: field 'id': an id must be a string"),
    ],
)
def test_bad_input_exits_2_before_sending(
    simulator: SimulatorProcess, tmp_path: Path, content: bytes, expected: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(content)
    result = run_cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
                     simulator.url)
    assert result.returncode == 2
    assert f"{source}{expected}" in result.stderr
    assert simulator.stats()["requests_seen"] == 0


def test_bad_rows_skipped_are_recorded(simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"id": "a", "prompt": "fine"}\n{"id": "b", "text": "no prompt"}\n'
                       b"not json\n")
    out = tmp_path / "out.jsonl"
    result = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                     "--on-bad-row", "skip")
    assert result.returncode == 1
    records = {r["id"]: r for r in read_jsonl(out)}
    assert records["a"]["status"] == "ok"
    assert records["b"]["status"] == "failed"
    assert records["b"]["error"]["type"] == "bad_input"
    assert "field 'prompt'" in records["b"]["error"]["message"]
    assert records["2"]["error"]["type"] == "bad_input"
    assert simulator.stats()["requests_seen"] == 1


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    assert run_cli("run", str(source)).returncode == 2
    assert run_cli("run", str(source), "-o", "o.jsonl", "--endpoint", "nope").returncode == 2
    missing = run_cli("run", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl"),
                      "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_body = run_cli("run", str(source), "-o", "o.jsonl", "--extra-body", "[1]")
    assert bad_body.returncode == 2 and "JSON object" in bad_body.stderr


def test_ordered_rewrites_in_input_order(simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(slow_rate=0.3, slow_latency=0.2, seed=3)
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p {i}"} for i in range(60)])
    out = tmp_path / "out.jsonl"
    result = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url, "--ordered")
    assert result.returncode == 0, result.stderr
    assert [r["index"] for r in read_jsonl(out)] == list(range(60))


def test_csv_parquet_and_gzip_inputs(simulator: SimulatorProcess, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "in.csv"
    csv_path.write_text("id,question\nq1,What is 2+2?\nq2,Name a colour.\n")
    parquet_path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["q1", "q2"], "question": ["a b", "c d"]}), parquet_path)
    gz_path = tmp_path / "in.jsonl.gz"
    with gzip.open(gz_path, "wt") as handle:
        handle.write('{"id": "q1", "question": "x"}\n{"id": "q2", "question": "y"}\n')
    for source in (csv_path, parquet_path, gz_path):
        out = tmp_path / f"{source.name}.out.jsonl"
        result = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                         "--prompt-field", "question")
        assert result.returncode == 0, result.stderr
        assert sorted(r["id"] for r in read_jsonl(out)) == ["q1", "q2"]


def test_ctrl_c_exits_130_and_resume_completes(simulator: SimulatorProcess, tmp_path: Path
                                                ) -> None:
    simulator.configure(latency=0.5)
    data = [{"id": f"r{i}", "prompt": f"p {i}"} for i in range(200)]
    source = write_jsonl(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "--base-url", simulator.url,
            "--concurrency", "10"]
    process = subprocess.Popen(vbatch_cmd(*args), stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert time.monotonic() - started < 7
    assert "Run the same command again to resume" in stderr
    partial = len(read_jsonl(out))
    assert 0 < partial < 200
    simulator.configure(latency=0.0)
    finished = run_cli(*args)
    assert finished.returncode == 0, finished.stderr
    counts = Counter(r["id"] for r in read_jsonl(out))
    assert set(counts) == {d["id"] for d in data} and max(counts.values()) == 1
