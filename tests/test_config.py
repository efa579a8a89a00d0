"""RunConfig checks every option once, at construction, naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vbatch import ConfigError, RunConfig
from vbatch.prepare.builder import RequestBuilder
from vbatch.settings import RequestSettings


def config(**options: Any) -> RunConfig:
    return RunConfig(input=Path("in.jsonl"), output=Path("out.jsonl"), **options)


def test_one_text_is_one_item_not_its_letters() -> None:
    made = config(stop="END", keep="id")
    assert made.stop == ("END",) and made.keep == ("id",)
    body = json.loads(RequestBuilder(RequestSettings.of(made), "m").body({"messages": []}, 5))
    assert body["stop"] == ["END"]


def test_unambiguous_numbers_given_as_text_are_taken() -> None:
    made = config(max_tokens="10", temperature="0.5", concurrency="8")
    assert (made.max_tokens, made.temperature, made.concurrency) == (10, 0.5, 8)


@pytest.mark.parametrize(("options", "named"), [
    ({"temperature": "hot"}, "temperature"),
    ({"retry_base_delay": -1}, "--retry-delay"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_tokens": 0}, "--max-tokens"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": "many"}, "--n"),
    ({"ordered": "yes"}, "ordered"),
    ({"stop": ["a", 3]}, "stop"),
    ({"request_timeout": 0}, "request_timeout"),
    ({"temperature": float("nan")}, "temperature"),
])
def test_wrong_values_name_the_field(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config(**options)
