"""``--ray`` on a cluster of several nodes on this machine, the way Ray tests itself
(``ray.cluster_utils.Cluster``): a head without CPUs for actors and worker nodes of one CPU
each, so one actor runs on each node; all on this machine, the simulator as the server."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vbatch import ConfigError, RunConfig, run

from .conftest import SimulatorProcess, read_jsonl, write_jsonl
from .test_ray import (
    assert_it_ended_with_each_row_once,
    rows,
    rows_in_background,
    shard_lines,
    wait_for,
)

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head and two worker nodes; the driver (this process) connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, connect=True,
                    head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        nodes.add_node(**NODE)
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def test_shards_spread_over_the_worker_nodes(cluster: Any, simulator: SimulatorProcess,
                                             tmp_path: Path) -> None:
    simulator.configure(latency=0.02, capacity=16)
    source = write_jsonl(tmp_path / "in.jsonl", rows(400))
    out = tmp_path / "out.jsonl"
    messages = io.StringIO()
    result = run(RunConfig(input=source, output=out, base_url=simulator.url, max_tokens=3,
                           ray=True, replicas=2, shard_rows=25, concurrency=8), stream=messages)
    assert result.exit_code == 0 and result.stats.ok == 400
    assert Counter(r["id"] for r in read_jsonl(out)) == Counter(r["id"] for r in rows(400))
    said = messages.getvalue()
    line = next(text for text in said.splitlines() if "shards by Ray node: " in text)
    counts = [int(part.rsplit(": ", 1)[1]) for part in
              line.split("shards by Ray node: ", 1)[1].split("; ")]
    assert len(counts) == 2 and sum(counts) == 16 and min(counts) >= 1


def test_a_worker_node_removed_mid_run_leaves_each_row_once(
        cluster: Any, simulator: SimulatorProcess, tmp_path: Path) -> None:
    background = rows_in_background(simulator, tmp_path)
    wait_for(lambda: shard_lines(tmp_path / "out.jsonl.shards") > 100, timeout=120)
    cluster.remove_node(next(iter(cluster.worker_nodes)))
    try:
        assert_it_ended_with_each_row_once(background, timeout=240)
    finally:
        cluster.add_node(**NODE)
        wait_for(lambda: alive_nodes() == 3, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="hiding a directory from one node needs a mount namespace (root)")
def test_a_shard_dir_a_node_cannot_see_is_refused_before_sending(
        cluster: Any, simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.reset()
    shared = tmp_path / "shared"
    shared.mkdir()
    ray_command = str(Path(sys.executable).with_name("ray"))
    # A node in a mount namespace of its own, where an empty file system covers ``shared``.
    hidden = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs none {shared} && exec {ray_command} start --block "
         f"--address={cluster.address} --num-cpus=1 "
         f"--object-store-memory={NODE['object_store_memory']} --disable-usage-stats"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: alive_nodes() == 4, timeout=120)
        source = write_jsonl(tmp_path / "in.jsonl", rows(60))
        config = RunConfig(input=source, output=tmp_path / "out.jsonl", base_url=simulator.url,
                           max_tokens=3, ray=True, replicas=3, shard_rows=10,
                           shard_dir=shared / "shards", quiet=True)
        with pytest.raises(ConfigError, match="not reachable from the Ray worker on") as caught:
            run(config)
        assert "cannot be read here" in str(caught.value) and "Nothing was sent" in str(
            caught.value)
        assert simulator.requests() == []
        assert not (shared / "shards").exists()
    finally:
        os.killpg(hidden.pid, signal.SIGTERM)
        hidden.wait(timeout=60)
        wait_for(lambda: alive_nodes() == 3, timeout=120)
