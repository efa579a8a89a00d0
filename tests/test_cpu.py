"""Reading the CPU's flags, and the dtype a CPU server gets from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from vbatch.servers import cpu
from vbatch.servers import options as server_options
from vbatch.servers.cpu import CpuInfo, choose_dtype, parse_cpuinfo
from vbatch.servers.options import ServerOptions, server_command

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma bmi2
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 avx512f avx512_vnni amx_bf16 amx_tile
"""


def test_parse_cpuinfo_reads_the_first_processor() -> None:
    info = parse_cpuinfo(ZEN3)
    assert info.model == "AMD EPYC 7B13"
    assert "avx2" in info.flags and info.bf16 is None
    assert info.summary == "avx2"
    assert parse_cpuinfo(SAPPHIRE_RAPIDS).bf16 == "amx_bf16"


@pytest.mark.parametrize(("flags", "dtype"), [
    ({"avx2"}, "float32"),
    ({"avx2", "avx512f"}, "float32"),
    ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
    ({"avx2", "amx_bf16"}, "bfloat16"),
    (set(), "float32"),
])
def test_bf16_only_where_the_cpu_computes_in_it(flags: set[str], dtype: str) -> None:
    choice = choose_dtype(CpuInfo("cpu", frozenset(flags)))
    assert choice.dtype == dtype
    assert choice.reason


def command(monkeypatch: pytest.MonkeyPatch, cpuinfo: str, **changes: object) -> list[str]:
    monkeypatch.setattr(server_options, "cpu_info", lambda: parse_cpuinfo(cpuinfo))
    options = ServerOptions(model="/models/m", log_path=Path("/tmp/s.log"),
                            **changes)  # type: ignore[arg-type]
    return server_command(options, 8000)


def dtypes(args: list[str]) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == "--dtype"]


def test_cpu_server_gets_the_dtype_of_its_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dtypes(command(monkeypatch, ZEN3, build="cpu")) == ["float32"]
    assert dtypes(command(monkeypatch, SAPPHIRE_RAPIDS, build="cpu")) == ["bfloat16"]


def test_the_users_dtype_wins_and_gpu_builds_are_untouched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    given = command(monkeypatch, ZEN3, build="cpu", extra_args=("--dtype", "bfloat16"))
    assert dtypes(given) == ["bfloat16"]
    assert dtypes(command(monkeypatch, ZEN3, build="cpu", extra_args=("--dtype=half",))) == []
    assert dtypes(command(monkeypatch, ZEN3, build="gpu")) == []


def test_this_machines_cpu_is_read() -> None:
    info = cpu.cpu_info()
    assert info.model
    if Path("/proc/cpuinfo").exists():
        assert info.flags
