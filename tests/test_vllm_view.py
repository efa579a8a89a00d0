"""Watching a run on the real CPU server: the token rate moves while long generations are
still running (it is read from the server's /metrics), the timeline holds the server's
figures, and `vbatch report` draws the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import read_jsonl, run_cli, write_jsonl

pytestmark = pytest.mark.vllm


def test_the_token_rate_moves_before_any_row_is_done(vllm_url: str, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "long.jsonl",
                         [{"id": i, "prompt": f"Tell a long story about the number {i}."}
                          for i in range(4)])
    out = tmp_path / "stories.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--base-url", vllm_url, "--max-tokens",
                   "320", "--extra-body", '{"ignore_eos": true}', "--log-every", "1",
                   "--log-format", "json", timeout=600)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    waiting = [e for e in events if e["event"] == "progress" and e["done"] == 0]
    assert any(e["tokens_per_s"] and e["tokens_per_s"] > 0 for e in waiting), events
    assert any(server["running"] for e in waiting for server in e["servers"])
    timeline = read_jsonl(tmp_path / "stories.jsonl.timeline.jsonl")
    generated = [s["servers"][0]["generation_tokens"] for s in timeline[1:]]
    assert generated[-1] - generated[0] >= 4 * 300
    pngs = tmp_path / "pngs"
    report = run_cli("report", str(out), "--png", str(pngs))
    assert report.returncode == 0, report.stderr
    assert (pngs / "kv_cache.png").exists() and (pngs / "throughput.png").exists()
