"""Where a program comes from: ``FILE.py:FUNCTION`` or ``package.module:FUNCTION`` (the CLI's
``--program``), or the function itself (Python). A program is ``async def f(row, llm)``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from vbatch.errors import ConfigError

__all__ = ["Program", "load_program", "program_name"]

Program = Callable[[dict[str, Any], Any], Awaitable[Any]]


def program_name(program: str | Callable[..., Any]) -> str:
    """What the manifest and the row fingerprints call the program."""
    if isinstance(program, str):
        return program
    module = getattr(program, "__module__", "") or ""
    return f"{module}:{getattr(program, '__qualname__', type(program).__name__)}"


def load_program(program: str | Callable[..., Any]) -> Program:
    """The program function; raises ConfigError (one line, naming ``--program``) when the file
    or module does not import, has no such function, or it is not ``async def f(row, llm)``."""
    function = _imported(program) if isinstance(program, str) else program
    where = program if isinstance(program, str) else program_name(program)
    if not callable(function):
        raise ConfigError(f"--program {where} is not a function")
    if not (inspect.iscoroutinefunction(function)
            or inspect.iscoroutinefunction(type(function).__call__)):
        raise ConfigError(f"--program {where} must be an async function: "
                          "async def program(row, llm): ... (its calls are awaited)")
    try:
        inspect.signature(function).bind({}, None)
    except (TypeError, ValueError):
        raise ConfigError(f"--program {where} must take two arguments, (row, llm)") from None
    return function


def _imported(reference: str) -> Any:
    target, colon, name = reference.rpartition(":")
    if not colon or not target or not name:
        raise ConfigError(f"--program {reference!r} is not FILE.py:FUNCTION or "
                          "module:FUNCTION (e.g. solve.py:solve)")
    try:
        if target.endswith(".py") or "/" in target:
            module = _from_file(Path(target))
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"--program {reference}: cannot import {target}: "
                          f"{type(exc).__name__}: {exc}") from None
    if not hasattr(module, name):
        raise ConfigError(f"--program {reference}: {target} has no function {name!r}")
    return getattr(module, name)


# Program files imported, by path and modification time: each is executed once.
_IMPORTED: dict[tuple[str, int], Any] = {}


def _from_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"--program {path}: no such file")
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key in _IMPORTED:
        return _IMPORTED[key]
    module_name = f"vbatch_program_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    _IMPORTED[key] = module
    return module
