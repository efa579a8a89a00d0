"""Several endpoints: balancing by outstanding requests and weight, draining, coming back."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from vbatch import ConfigError
from vbatch.transport.pool import read_endpoints_file
from vbatch.urls import normalize_base_url, redact_url

from .conftest import (
    SimulatorProcess,
    read_jsonl,
    run_cli,
    start_simulator,
    vbatch_cmd,
    write_jsonl,
)
from .vllm_helpers import wait_for_lines


@pytest.fixture
def two_simulators() -> list[SimulatorProcess]:
    sims = [start_simulator("--latency", "0.1"), start_simulator("--latency", "0.1")]
    yield sims  # type: ignore[misc]
    for sim in sims:
        sim.stop()


def rows(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"p {i}"}
                                               for i in range(count)])


def test_requests_spread_over_endpoints(two_simulators: list[SimulatorProcess], tmp_path: Path
                                        ) -> None:
    a, b = two_simulators
    stats = tmp_path / "stats.json"
    result = run_cli("run", str(rows(tmp_path, 400)), "-o", str(tmp_path / "out.jsonl"),
                     "--base-url", a.url, "--base-url", b.url, "--concurrency", "40",
                     "--stats-json", str(stats))
    assert result.returncode == 0, result.stderr
    seen = [a.stats()["requests_seen"], b.stats()["requests_seen"]]
    assert sum(seen) == 400 and min(seen) >= 150
    assert f"endpoint {a.url}: " in result.stderr
    assert [e["requests"] for e in json.loads(stats.read_text())["endpoints"]] == seen


def test_weights_from_an_endpoints_file(two_simulators: list[SimulatorProcess], tmp_path: Path
                                        ) -> None:
    a, b = two_simulators
    listing = tmp_path / "endpoints.txt"
    listing.write_text(f"# two servers\n{a.url} 3\n\n{b.url}\n")
    result = run_cli("run", str(rows(tmp_path, 400)), "-o", str(tmp_path / "out.jsonl"),
                     "--endpoints", str(listing), "--concurrency", "40")
    assert result.returncode == 0, result.stderr
    ratio = a.stats()["requests_seen"] / b.stats()["requests_seen"]
    assert 2.0 <= ratio <= 4.5


def test_endpoint_killed_mid_run_is_drained_and_comes_back(
    two_simulators: list[SimulatorProcess], tmp_path: Path
) -> None:
    a, b = two_simulators
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        vbatch_cmd("run", str(rows(tmp_path, 3000)), "-o", str(out), "--base-url", a.url,
                   "--base-url", b.url, "--concurrency", "20"),
        stderr=subprocess.PIPE, text=True)
    assert wait_for_lines(out, 100, timeout=60) >= 100
    port = a.url.rsplit(":", 1)[1].split("/")[0]
    a.process.kill()
    a.process.wait()
    time.sleep(1.0)
    revived = start_simulator("--latency", "0.1", port=int(port))
    try:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-2000:]
        counts = Counter(r["id"] for r in read_jsonl(out))
        assert set(counts) == {f"r{i}" for i in range(3000)} and max(counts.values()) == 1
        assert "drained 1 times" in stderr
        assert revived.stats()["requests_seen"] > 0
    finally:
        revived.stop()


def test_endpoints_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "e.txt"
    path.write_text("http://127.0.0.1:1/v1 heavy\n")
    with pytest.raises(ConfigError, match=r"e\.txt:1: the weight 'heavy'"):
        read_endpoints_file(path)
    path.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="lists no URL"):
        read_endpoints_file(path)
    path.write_text("http://a:1/v1 2\nhttp://b:2\n")
    assert read_endpoints_file(path) == [("http://a:1/v1", 2.0), ("http://b:2", 1.0)]


def test_a_password_in_the_url_is_used_and_never_shown(simulator: SimulatorProcess,
                                                       tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    out = tmp_path / "out.jsonl"
    root = simulator.url.removesuffix("/v1")
    with_password = root.replace("http://", "http://alice:hunter2@") + "/v1"
    urls = normalize_base_url(with_password)
    assert "hunter2" not in urls.api + urls.root and urls.credentials == "alice:hunter2"
    assert redact_url(with_password) == with_password.replace("hunter2", "***")
    done = run_cli("run", str(source), "-o", str(out), "--base-url", with_password,
                   "--max-tokens", "2", "--max-retries", "0")
    assert done.returncode == 0, done.stderr
    dead = with_password.replace(root.rsplit(":", 1)[1], "9")
    failed = run_cli("run", str(source), "-o", str(tmp_path / "dead.jsonl"), "--base-url", dead,
                     "--model", "m", "--max-tokens", "2", "--max-retries", "0")
    assert failed.returncode == 1
    for text in (done.stderr, failed.stderr, out.read_text(),
                 (tmp_path / "dead.jsonl").read_text()):
        assert "hunter2" not in text
