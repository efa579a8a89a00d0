"""What a rerun may skip: the output's records, checked against the input as it is now."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vbatch.errors import ConfigError
from vbatch.output.ledger import (
    OutputState,
    changed_rows,
    ids_of_hashes,
    input_drift,
    read_output,
    remove_records,
)
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.plan import SHOWN_IDS, ids_of
from vbatch.prepare.scan import InputScan
from vbatch.settings import SourceSettings

__all__ = ["reconcile_input", "replace_changed", "say_repairs"]


def say_repairs(state: OutputState, output: Path, say: Callable[[str], None]) -> None:
    """Tell what reading ``output`` repaired."""
    if state.repaired_bytes:
        say(f"repaired a torn last line in {output} ({state.repaired_bytes} bytes)")
    if state.damaged:
        lines = ", ".join(map(str, state.damaged_lines))
        more = ", ..." if state.damaged > len(state.damaged_lines) else ""
        say(f"removed {state.damaged} damaged lines from {output} (line {lines}{more}): "
            "their rows run again")
    if state.duplicates:
        say(f"removed {state.duplicates} second records of ids already in {output}: "
            "each row keeps its first record")


def replace_changed(source: SourceSettings, output: Path, force: bool,
                    builder: RequestBuilder, scan: InputScan, state: OutputState,
                    say: Callable[[str], None]) -> OutputState:
    """Refuse rows whose request changed since their record in ``output`` was written; with
    ``force``, remove those records so that the rows are sent again. Returns the output's
    state."""
    if scan.fingerprints is None:
        return state
    changed = changed_rows(scan.id_hashes, scan.fingerprints, state)
    count = int(np.count_nonzero(changed))
    if not count:
        return state
    if not force:
        indices = np.flatnonzero(changed)
        shown = [row_id for row_id, _ in ids_of(source, builder, indices,
                                                np.zeros(scan.total, np.int64))]
        more = f" and {count - len(shown)} more" if count > len(shown) else ""
        raise ConfigError(
            f"{count} rows of {source.given} changed since {output} recorded them (their "
            f"prompt, template or system message): {', '.join(shown)}{more}. Nothing was "
            "sent. Use --force to send them again and replace their records, or another -o "
            "for a new run."
        )
    remove_records(output, scan.id_hashes[changed])
    say(f"--force: sending {count} changed rows again; their old records in {output} "
        "were removed")
    return read_output(output, retry_failed=False)


def reconcile_input(source: SourceSettings, output: Path, force: bool, scan: InputScan,
                    state: OutputState, say: Callable[[str], None]) -> OutputState:
    """Refuse records that no longer match the input (ids it no longer has, rows that moved);
    with ``force``, drop the records of vanished ids and renumber the moved ones. Rows added
    to the input are no change: they are simply sent. Returns the output's state."""
    drift = input_drift(scan.id_hashes, state)
    if not drift:
        return state
    vanished, moved = drift.vanished.size, len(drift.moved)
    parts = []
    if vanished:
        shown = ids_of_hashes(output, drift.vanished, SHOWN_IDS)
        more = f" and {vanished - len(shown)} more" if vanished > len(shown) else ""
        parts.append(f"{vanished} records are for ids no longer in it "
                     f"({', '.join(map(repr, shown))}{more})")
    if moved:
        parts.append(f"{moved} rows are at another place than their records say "
                     "(the rows were reordered)")
    what = f"{source.given} changed since {output} recorded it: {'; '.join(parts)}"
    if not force:
        raise ConfigError(f"{what}. Nothing was sent. Use --force to drop the records of the "
                          "ids no longer in the input and renumber the moved ones, or another "
                          "-o for a new run.")
    remove_records(output, drift.vanished, drift.moved)
    say(f"--force: {what}; dropped {vanished} records and renumbered {moved}")
    return read_output(output, retry_failed=False)
