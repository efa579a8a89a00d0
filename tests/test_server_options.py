"""The command line and environment a managed vLLM server is started with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vbatch.servers.options import (
    ServerOptions,
    cpu_ranges,
    replica_options,
    server_command,
    server_environment,
)


def options(**changes: object) -> ServerOptions:
    return ServerOptions(model="/models/m", log_path=Path("/tmp/server.log"),
                         **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cpus", "expected"), [
    ([0], "0"), ([0, 1], "0-1"), ([3, 0, 1, 2, 5], "0-3,5"), ([1, 3, 5], "1,3,5"),
])
def test_cpu_ranges(cpus: list[int], expected: str) -> None:
    assert cpu_ranges(cpus) == expected


def test_cpu_server_runs_its_one_worker_in_the_engine_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    assert server_environment(options(build="cpu"), None)[
        "VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    parallel = server_environment(options(build="cpu", tensor_parallel_size=2), None)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in parallel
    passed = server_environment(options(build="cpu", extra_args=("-tp", "2")), None)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in passed
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in server_environment(options(build="gpu"), None)


def test_the_callers_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    monkeypatch.setenv("VLLM_API_KEY", "leaked-from-the-shell")
    env = server_environment(options(build="cpu"), "k")
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_API_KEY"] == "k"
    assert "VLLM_API_KEY" not in server_environment(options(build="cpu"), None)


OTHER_SECRETS = {"PGPASSWORD": "pg", "MYSQL_PWD": "my", "GH_PAT": "ghp", "NPM_AUTH": "npm",
                 "SMTP_PASS": "smtp", "AUTH_HEADER": "Bearer x", "COOKIE": "session=1",
                 "DATABASE_URL": "postgres://u:pw@db/x", "REDIS_URL": "redis://:pw@r:6379",
                 "OPENAI_API_KEY": "sk", "VBATCH_API_KEY": "vb", "AWS_SECRET_ACCESS_KEY": "aws"}


def test_the_server_gets_only_what_vllm_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in OTHER_SECRETS.items():
        monkeypatch.setenv(name, value)
    kept = {"HF_HOME": "/hf", "VLLM_LOGGING_LEVEL": "INFO", "OMP_NUM_THREADS": "2",
            "LC_ALL": "C.UTF-8", "HF_TOKEN": "hub-token"}
    for name, value in kept.items():
        monkeypatch.setenv(name, value)
    env = server_environment(options(build="cpu"), "k")
    assert not set(OTHER_SECRETS) & set(env)
    assert not {value for value in OTHER_SECRETS.values()} & set(env.values())
    assert {name: env[name] for name in kept} == kept
    assert env["PATH"] == os.environ["PATH"] and env["VLLM_API_KEY"] == "k"


def test_command_sets_batch_limits_unless_passed_through() -> None:
    command = server_command(options(build="cpu", max_model_len=2048), 8000)
    assert command[command.index("--max-num-seqs") + 1] == "128"
    assert command[command.index("--max-model-len") + 1] == "2048"
    assert "--enforce-eager" in command and "--tensor-parallel-size" not in command
    parallel = server_command(options(build="cpu", tensor_parallel_size=2), 8000)
    assert parallel[parallel.index("--tensor-parallel-size") + 1] == "2"
    given = server_command(options(build="cpu", extra_args=("--max-num-seqs=8",)), 8000)
    assert given.count("--max-num-seqs") == 0 and given[-1] == "--max-num-seqs=8"


def test_replicas_split_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vbatch.servers.options._usable_cpus", lambda: [0, 1, 2, 3])
    first, second = (replica_options(options(build="cpu"), i, 2) for i in range(2))
    assert (first.cpus, second.cpus) == ((0, 2), (1, 3))
    assert first.log_path.name == "server.0.log" and second.memory_share == 2
    assert server_environment(second, None)["VLLM_CPU_OMP_THREADS_BIND"] == "1,3"


def test_cpu_threads_sleep_while_waiting_and_float_unless_given_cpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_WAIT_POLICY", "VLLM_CPU_OMP_THREADS_BIND"):
        monkeypatch.delenv(name, raising=False)
    env = server_environment(options(build="cpu"), None)
    assert (env["OMP_WAIT_POLICY"], env["VLLM_CPU_OMP_THREADS_BIND"]) == ("PASSIVE", "nobind")
    assert "OMP_WAIT_POLICY" not in server_environment(options(build="gpu"), None)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    env = server_environment(options(build="cpu"), None)
    assert (env["OMP_WAIT_POLICY"], env["VLLM_CPU_OMP_THREADS_BIND"]) == ("ACTIVE", "0-1")


def test_the_server_gets_none_of_the_callers_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD"):
        monkeypatch.setenv(name, "secret")
    monkeypatch.setenv("HF_TOKEN", "hub")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    env = server_environment(options(build="cpu"), "own-key")
    assert "secret" not in env.values()
    assert env["HF_TOKEN"] == "hub" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["VLLM_API_KEY"] == "own-key"


def test_a_cpu_server_starts_with_the_models_own_context_when_its_kv_space_holds_it(
        tmp_path: Path) -> None:
    import json

    from vbatch.servers.start_context import kv_bytes_per_token, start_context

    model = tmp_path / "model"
    model.mkdir()
    layout = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
              "hidden_size": 576, "max_position_embeddings": 8192}
    (model / "config.json").write_text(json.dumps(layout))
    # SmolLM2-135M in bfloat16: 2 (K and V) x 30 layers x 3 heads x 64 dims x 2 bytes.
    assert kv_bytes_per_token(layout, 2) == 23_040
    cpu = ServerOptions(model=str(model), log_path=tmp_path / "log", build="cpu",
                        extra_args=("--dtype", "bfloat16"))
    assert start_context(cpu, {"VLLM_CPU_KVCACHE_SPACE": "1"}) == 8192
    # Four sequences of 8192 tokens need 4 x 8192 x 46,080 bytes in float32: more than 1 GiB.
    as_float32 = ServerOptions(model=str(model), log_path=tmp_path / "log", build="cpu",
                               extra_args=("--dtype", "float32"))
    assert start_context(as_float32, {"VLLM_CPU_KVCACHE_SPACE": "1"}) is None
    assert start_context(as_float32, {"VLLM_CPU_KVCACHE_SPACE": "2"}) == 8192
    gpu = ServerOptions(model=str(model), log_path=tmp_path / "log", build="gpu")
    assert start_context(gpu, {"VLLM_CPU_KVCACHE_SPACE": "16"}) is None
    hub = ServerOptions(model="org/not-here", log_path=tmp_path / "log", build="cpu")
    assert start_context(hub, {"VLLM_CPU_KVCACHE_SPACE": "16"}) is None
    assert kv_bytes_per_token({"num_hidden_layers": 2}, 2) is None


def test_the_server_goes_when_its_guard_is_killed() -> None:
    import subprocess
    import sys
    import time

    import psutil

    guard = subprocess.Popen([sys.executable, "-m", "vbatch.servers.guard", "--", sys.executable,
                              "-c", "import time; time.sleep(120)"], start_new_session=True)
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 20
    while not children and time.monotonic() < deadline:
        children = psutil.Process(guard.pid).children()
        time.sleep(0.05)
    assert children
    guard.kill()  # SIGKILL: the guard cannot stop its group itself
    guard.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
