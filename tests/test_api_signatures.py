"""The Python API's signatures name every option with its type and default, following
RunConfig, so ``help(vbatch.generate)`` and an IDE show them and the two cannot drift."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

import vbatch
from vbatch.config import MANAGED_SERVER_OPTIONS, RunConfig
from vbatch.options import NOT_OPTIONS, RunOptions
from vbatch.servers.options import ServerOptions


def test_run_options_are_runconfigs_fields_with_their_types() -> None:
    config_hints = typing.get_type_hints(RunConfig)
    option_hints = typing.get_type_hints(RunOptions)
    fields = [f.name for f in dataclasses.fields(RunConfig) if f.name not in NOT_OPTIONS]
    assert list(option_hints) == fields
    for name in fields:
        assert option_hints[name] == config_hints[name], name


@pytest.mark.parametrize("function", [vbatch.generate, vbatch.agenerate, vbatch.stream])
def test_every_option_is_in_the_signature_with_its_default(function: typing.Any) -> None:
    parameters = inspect.signature(function).parameters
    for field in dataclasses.fields(RunConfig):
        if field.name in NOT_OPTIONS:
            continue
        parameter = parameters[field.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default == field.default, field.name
        assert parameter.annotation is not inspect.Parameter.empty
    assert "max_tokens" in (inspect.getdoc(function) or "") or "max_tokens" in str(
        inspect.signature(function))
    assert "cache" in parameters and "rows" in parameters and "input" not in parameters


def test_server_takes_the_managed_server_options_of_a_run() -> None:
    parameters = inspect.signature(vbatch.Server).parameters
    defaults = {f.name: f.default for f in dataclasses.fields(ServerOptions)}
    for name in MANAGED_SERVER_OPTIONS:
        assert parameters[name].default == defaults[name], name
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    with pytest.raises(TypeError):
        vbatch.Server(max_tokens=5)  # type: ignore[call-arg]
