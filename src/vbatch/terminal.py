"""One line redrawn in place on a terminal (rich), cut to the terminal's width and gone when
closed: the check pass's and the server start's progress."""

from __future__ import annotations

from typing import TextIO

__all__ = ["TransientLine"]


class TransientLine:
    """A line on ``stream`` (a terminal) that :meth:`show` replaces and :meth:`close` clears."""

    def __init__(self, stream: TextIO):
        from rich.console import Console
        from rich.live import Live

        self._live = Live(console=Console(file=stream, highlight=False), transient=True,
                          auto_refresh=False)
        self._live.start()

    def show(self, text: str) -> None:
        """Draw ``text`` in place of the line (an ellipsis where it is too long)."""
        from rich.text import Text

        self._live.update(Text(text, no_wrap=True, overflow="ellipsis"), refresh=True)

    def close(self) -> None:
        """Clear the line."""
        self._live.stop()
