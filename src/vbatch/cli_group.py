"""How an option group is written: a list of click decorators applied as one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["decorated"]


def decorated(
    command: Callable[..., Any], decorators: list[Callable[..., Any]]
) -> Callable[..., Any]:
    """``command`` under ``decorators``, the first one outermost (listed first in --help)."""
    for decorator in reversed(decorators):
        command = decorator(command)
    return command
