"""The exception tree: every error a caller can meet is exported, documented, and carries the
exit status the CLI gives it."""

from __future__ import annotations

import inspect
import re

import vbatch
from vbatch import errors


def _error_classes() -> list[type[errors.VbatchError]]:
    return [value for value in vars(errors).values()
            if inspect.isclass(value) and issubclass(value, errors.VbatchError)]


def test_every_error_is_exported_from_vbatch() -> None:
    for cls in _error_classes():
        assert getattr(vbatch, cls.__name__) is cls, cls.__name__
        assert cls.__name__ in vbatch.__all__
        assert cls.__doc__, f"{cls.__name__} has no docstring"


def test_the_documented_tree_gives_each_error_its_place_and_exit_code() -> None:
    doc = errors.__doc__ or ""
    classes = {cls.__name__: cls for cls in _error_classes()}
    documented = {}
    for line in doc.splitlines():
        match = re.match(r"^[\s│├└─]*([A-Z]\w+)\b\s*(\d+)?", line)
        if match and match.group(1) in classes:
            documented[match.group(1)] = int(match.group(2)) if match.group(2) else None
    assert set(documented) == set(classes)
    for name, code in documented.items():
        if code is not None:
            assert classes[name].exit_code == code, name


def test_sending_aborted_is_not_a_server_failure_and_exits_3() -> None:
    # A wrong key on a remote server aborts the run as well as a dead managed server does.
    assert not issubclass(vbatch.RunAbortedError, vbatch.ServerError)
    assert vbatch.RunAbortedError.exit_code == vbatch.EXIT_SERVER == 3
    assert vbatch.ServerStartError.exit_code == vbatch.ServerDiedError.exit_code == 3
    assert vbatch.OutputWriteError.exit_code == vbatch.EXIT_OUTPUT == 4
    assert vbatch.ConfigError.exit_code == vbatch.InputError.exit_code == vbatch.EXIT_USAGE
    assert vbatch.RunStoppedError.exit_code == vbatch.EXIT_INTERRUPTED == 130


def test_a_caller_catches_what_escapes_run() -> None:
    try:
        vbatch.run(vbatch.RunConfig(input="missing-input.jsonl", output="/nonexistent/o.jsonl",
                                    base_url="http://127.0.0.1:9/v1"))
    except vbatch.VbatchError as exc:
        assert exc.exit_code == 2
    else:
        raise AssertionError("a run of a missing input did not raise")
