"""What the machine's CPU can do, and the settings that follow for a CPU vLLM server."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuInfo", "DtypeChoice", "choose_dtype", "cpu_info"]

CPUINFO = Path("/proc/cpuinfo")
# Instructions that compute in bfloat16; without them vLLM's CPU kernels emulate it.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and instruction-set flags."""

    model: str
    flags: frozenset[str]

    @property
    def bf16(self) -> str | None:
        """The first bf16 instruction set the CPU has, or None."""
        return next((flag for flag in BF16_FLAGS if flag in self.flags), None)

    @property
    def summary(self) -> str:
        """The flags that decide vLLM's CPU speed, e.g. ``avx2 avx512f avx512_bf16``."""
        shown = [flag for flag in SHOWN_FLAGS if flag in self.flags]
        return " ".join(shown) if shown else "no AVX2/AVX-512 flags"


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a CPU server runs the model in, and why."""

    dtype: str
    reason: str


def parse_cpuinfo(text: str) -> CpuInfo:
    """The model name and flags of the first processor in ``/proc/cpuinfo`` text."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return CpuInfo(model or platform.processor() or "unknown CPU", flags)


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (flags are empty where ``/proc/cpuinfo`` is not there)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text(errors="replace"))
    except OSError:
        return CpuInfo(platform.processor() or "unknown CPU", frozenset())


def choose_dtype(info: CpuInfo) -> DtypeChoice:
    """bfloat16 where the CPU computes in it, else float32 (emulated bf16 is ~4x slower)."""
    if info.bf16:
        return DtypeChoice("bfloat16", f"the CPU has {info.bf16}")
    if not info.flags:
        return DtypeChoice("float32", "the CPU's flags are unknown")
    return DtypeChoice("float32", "the CPU has no avx512_bf16/amx_bf16, so bf16 would be emulated")
