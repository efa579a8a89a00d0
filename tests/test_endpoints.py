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


def few_shot_rows(tmp_path: Path, groups: int, per_group: int) -> Path:
    """Rows whose prompts start with one of ``groups`` long few-shot blocks."""
    blocks = [f"Examples, set {g}: " + " ".join(f"q{g}-{i} -> a{i}." for i in range(60))
              for g in range(groups)]
    return write_jsonl(tmp_path / "few-shot.jsonl", [
        {"id": f"g{g}-{i}", "prompt": f"{blocks[g]}\nNow answer question {i}."}
        for i in range(per_group) for g in range(groups)])


def groups_seen(sim: SimulatorProcess) -> Counter[str]:
    return Counter(r["messages"][-1]["content"].split(":", 1)[0] for r in sim.requests())


def test_rows_sharing_a_long_prompt_start_go_to_one_server(
        two_simulators: list[SimulatorProcess], tmp_path: Path) -> None:
    for sim in two_simulators:
        sim.configure(latency=0.01, keep_requests=1000)
    a, b = two_simulators
    stats = tmp_path / "stats.json"
    result = run_cli("run", str(few_shot_rows(tmp_path, 20, 10)), "-o",
                     str(tmp_path / "out.jsonl"), "--base-url", a.url, "--base-url", b.url,
                     "--concurrency", "4", "--stats-json", str(stats), "--quiet")
    assert result.returncode == 0, result.stderr
    on_a, on_b = groups_seen(a), groups_seen(b)
    # Each of the 20 few-shot blocks was prefilled on one server only; both took some.
    assert not set(on_a) & set(on_b) and on_a and on_b
    assert sum(on_a.values()) + sum(on_b.values()) == 200
    assert sum(e["affine_requests"] for e in json.loads(stats.read_text())["endpoints"]) == 200


def test_affinity_gives_way_to_balance(two_simulators: list[SimulatorProcess], tmp_path: Path
                                       ) -> None:
    a, b = two_simulators
    result = run_cli("run", str(few_shot_rows(tmp_path, 1, 300)), "-o",
                     str(tmp_path / "out.jsonl"), "--base-url", a.url, "--base-url", b.url,
                     "--concurrency", "40", "--quiet")
    assert result.returncode == 0, result.stderr
    # One block for every row: its server takes more, the other what spills over.
    seen = sorted([a.stats()["requests_seen"], b.stats()["requests_seen"]])
    assert sum(seen) == 300 and seen[0] >= 60 and seen[1] > seen[0]


def test_a_server_that_leaves_moves_only_the_keys_it_won() -> None:
    from vbatch.transport.affinity import rendezvous_score, server_salt

    urls = [f"http://10.0.0.{i}:8000/v1" for i in range(4)]
    salts = {url: server_salt(url) for url in urls}

    def owner(key: int, among: list[str]) -> str:
        return max(among, key=lambda url: rendezvous_score(key, salts[url], 1.0))

    keys = range(0, 4000 * 7919, 7919)
    before = {key: owner(key, urls) for key in keys}
    after = {key: owner(key, urls[:3]) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert all(before[key] == urls[3] for key in moved)
    assert 800 <= len(moved) <= 1200  # its quarter
    assert 800 <= Counter(before.values())[urls[0]] <= 1200


def test_no_prefix_routing_sends_to_the_least_loaded(two_simulators: list[SimulatorProcess],
                                                     tmp_path: Path) -> None:
    for sim in two_simulators:
        sim.configure(latency=0.01, keep_requests=1000)
    a, b = two_simulators
    result = run_cli("run", str(few_shot_rows(tmp_path, 20, 10)), "-o",
                     str(tmp_path / "out.jsonl"), "--base-url", a.url, "--base-url", b.url,
                     "--concurrency", "4", "--no-prefix-routing", "--quiet")
    assert result.returncode == 0, result.stderr
    # Least outstanding alternates: most blocks reach both servers.
    assert len(set(groups_seen(a)) & set(groups_seen(b))) >= 10
