"""What a report is drawn from: the run's records (read once, streaming), its manifest and its
timeline (``OUTPUT.timeline.jsonl``, :mod:`vbatch.engine.timeline`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from vbatch.engine.timeline import timeline_path
from vbatch.errors import OutputError
from vbatch.output.manifest import manifest_path

__all__ = ["ReportData", "Segment", "load_report_data"]


@dataclass
class Segment:
    """One run of the output (a resumed run adds one): its header and samples."""

    started: float
    rows_total: int
    already_done: int
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReportData:
    """Everything a report shows."""

    output: Path
    records_path: Path
    manifest: dict[str, Any]
    statuses: Counter[str]
    failures: Counter[str]
    finish_reasons: Counter[str]
    latency_s: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    segments: list[Segment]
    # Structured outputs: answers not of the shape asked, by reason (retried ones included).
    invalid_answers: Counter[str]
    # A program run: the rows' calls, and those replayed from the calls journal.
    calls: int = 0
    calls_replayed: int = 0


def _records_path(output: Path) -> Path:
    """The file of vbatch records: the journal of a Parquet or OpenAI Batch output, else the
    JSON Lines output itself."""
    journal = output.with_name(output.name + ".journal.jsonl")
    if journal.exists():
        return journal
    if output.suffix in (".jsonl", ".json", ".ndjson") and output.exists():
        return output
    raise OutputError(f"{output}: no vbatch records found (neither {output.name} as JSON Lines "
                      f"nor {journal.name}); give the -o of a vbatch run")


def _read_timeline(path: Path) -> list[Segment]:
    segments: list[Segment] = []
    if not path.exists():
        return segments
    with open(path, "rb") as handle:
        for line in handle:
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut by a kill
            if "segment" in item:
                segments.append(Segment(item["started"], item["rows_total"],
                                        item["already_done"]))
            elif segments:
                segments[-1].samples.append(item)
    return [segment for segment in segments if segment.samples]


def load_report_data(output: Path) -> ReportData:
    """Read ``output``'s records, manifest and timeline; raises OutputError when it is not
    a vbatch output."""
    records = _records_path(output)
    statuses: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    calls = replayed = 0
    reasons: Counter[str] = Counter()
    latency: list[float] = []
    prompt: list[int] = []
    completion: list[int] = []
    with open(records, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the last line of a killed run; resume repairs it
            if not isinstance(record, dict) or "status" not in record:
                raise OutputError(f"{records}:{number}: not a vbatch record")
            statuses[record["status"]] += 1
            if record.get("latency_s") is not None:
                latency.append(record["latency_s"])
            usage = record.get("usage") or {}
            if isinstance(usage.get("prompt_tokens"), int):
                prompt.append(usage["prompt_tokens"])
            if isinstance(usage.get("completion_tokens"), int):
                completion.append(usage["completion_tokens"])
            finish = record.get("finish_reason")
            for reason in finish if isinstance(finish, list) else [finish]:
                if reason is not None:
                    reasons[str(reason)] += 1
            error = record.get("error")
            if isinstance(error, dict):
                reason = f" ({error['reason']})" if error.get("reason") else ""
                failures[f"{error.get('type')}{reason}"] += 1
            for why, count in (record.get("invalid_answers") or {}).items():
                invalid[str(why)] += count
            calls += int(record.get("calls") or 0)
            replayed += int(record.get("calls_replayed") or 0)
    manifest_file = manifest_path(records)
    manifest = orjson.loads(manifest_file.read_bytes()) if manifest_file.exists() else {}
    return ReportData(output, records, manifest, statuses, failures, reasons,
                      np.asarray(latency, dtype=np.float64), np.asarray(prompt, dtype=np.int64),
                      np.asarray(completion, dtype=np.int64),
                      _read_timeline(timeline_path(output)), invalid, calls, replayed)
