"""The OpenAI Batch output format (what ``vllm run-batch`` writes): one line per request,
``{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null, "error"}``.

Records are journaled as vbatch records while the run goes (``OUTPUT.journal.jsonl``, what a
resume reads); the output (and the ``--error-file``, when given) is written from the journal
at the end, atomically. A failed line has ``error`` ``{"code", "message"}`` and, when the server
answered, the HTTP status in ``response``.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from vbatch.errors import write_failure
from vbatch.output.atomic import replaced
from vbatch.output.formats.base import OutputFormat
from vbatch.output.writer import record_lines

__all__ = ["OpenAIBatch", "batch_line"]

_NOT_SENT = 400


def batch_line(record: dict[str, Any]) -> dict[str, Any]:
    """The batch output line of a vbatch record."""
    request_id = f"vbatch-batch-{uuid.uuid4().hex}"
    line: dict[str, Any] = {"id": f"vbatch-{uuid.uuid4().hex}", "custom_id": record["id"]}
    if record["status"] == "ok":
        line["response"] = {"status_code": 200, "request_id": request_id,
                            "body": record.get("response")}
        line["error"] = None
        return line
    error = record.get("error") or {}
    status = error.get("status_code") or _NOT_SENT
    line["response"] = {"status_code": status, "request_id": request_id, "body": None}
    line["error"] = {"code": str(error.get("type") or "error"),
                     "message": str(error.get("message") or "")}
    return line


class OpenAIBatch(OutputFormat):
    """Batch output lines; failed ones go to ``error_file`` instead when it is given."""

    name = "OpenAI Batch output"
    suffixes = (".jsonl",)

    def __init__(self, error_file: Path | None = None):
        self.error_file = error_file

    def journal(self, output: Path) -> Path:
        return output.with_name(output.name + ".journal.jsonl")

    def finish(self, journal: Path, output: Path, ordered: bool) -> None:
        with contextlib.ExitStack() as stack:
            try:
                target = stack.enter_context(replaced(output, ".writing"))
                failed: BinaryIO = target
                if self.error_file is not None:
                    failed = stack.enter_context(replaced(self.error_file, ".writing"))
                for raw in record_lines(journal, ordered):
                    record = orjson.loads(raw)
                    line = orjson.dumps(batch_line(record), option=orjson.OPT_APPEND_NEWLINE)
                    (target if record["status"] == "ok" else failed).write(line)
            except OSError as exc:
                raise write_failure(output, exc) from None
