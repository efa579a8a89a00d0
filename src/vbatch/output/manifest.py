"""The manifest beside the output: the parameters that produced it, checked on resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from vbatch._version import __version__
from vbatch.errors import ManifestMismatchError, OutputError
from vbatch.output.atomic import replaced


def manifest_path(output: Path) -> Path:
    """Where the manifest of ``output`` lives."""
    return output.with_name(output.name + ".manifest.json")


def check_manifest(output: Path, params: dict[str, Any], *, force: bool) -> None:
    """Refuse to resume ``output`` with other generation parameters, unless ``force``."""
    path = manifest_path(output)
    if force or not path.exists() or not output.exists() or output.stat().st_size == 0:
        return
    try:
        recorded = orjson.loads(path.read_bytes())["generation"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise OutputError(f"{path} is damaged: delete it, or rerun with --force") from None
    changed = sorted(k for k in set(recorded) | set(params) if recorded.get(k) != params.get(k))
    if changed:
        lines = [f"  {k}: was {recorded.get(k)!r}, now {params.get(k)!r}" for k in changed]
        raise ManifestMismatchError(
            f"{output} was made with other generation parameters:\n"
            + "\n".join(lines)
            + "\nUse the same options to resume, another -o for a new run, "
            "or --force to continue anyway."
        )


def write_manifest(output: Path, input_path: Path, params: dict[str, Any]) -> None:
    """Record the run's parameters (never the API key), atomically; a manifest that is
    there keeps its permissions."""
    path = manifest_path(output)
    data = {"vbatch_version": __version__, "input": str(input_path), "generation": params}
    with replaced(path, ".tmp") as target:
        target.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
