"""Rows become the requests a user expects: chat, completions, messages, template, system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from vbatch import ConfigError, InputError, RunConfig
from vbatch.prepare.builder import RequestBuilder
from vbatch.settings import RequestSettings
from vbatch.source.readers import RawRow

from .conftest import SimulatorProcess, read_jsonl, run_cli, write_jsonl


def build(data: dict[str, Any], **options: Any) -> dict[str, Any]:
    config = RunConfig(input=Path("in.jsonl"), output=Path("out.jsonl"), **options)
    builder = RequestBuilder(RequestSettings.of(config), "m")
    row = RawRow(0, "in.jsonl:1", data)
    return orjson.loads(builder.body(builder.content(row)))  # type: ignore[no-any-return]


def test_chat_prompt_becomes_a_user_message() -> None:
    body = build({"prompt": "Hi"}, max_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    assert body == {
        "model": "m", "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3,
    }


def test_unset_sampling_options_are_not_sent() -> None:
    expected = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    assert build({"prompt": "Hi"}) == expected


def test_system_comes_first() -> None:
    body = build({"prompt": "Hi"}, system="Be brief.")
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
    ]


def test_messages_row_is_sent_as_it_is() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}]
    assert build({"messages": messages}, system="other")["messages"] == messages


def test_system_is_added_to_messages_without_one() -> None:
    messages = [{"role": "user", "content": "Q"}]
    assert build({"messages": messages}, system="S")["messages"] == [
        {"role": "system", "content": "S"}, *messages,
    ]


def test_completions_send_a_prompt_string() -> None:
    body = build({"prompt": "Once"}, endpoint="completions", max_tokens=3, stop=("\n", "."), n=2)
    assert body == {"model": "m", "prompt": "Once", "max_tokens": 3, "stop": ["\n", "."], "n": 2}


def test_template_uses_row_fields() -> None:
    body = build({"title": "T", "text": "body"}, template="Summarise {{ title }}: {{ text }}")
    assert body["messages"] == [{"role": "user", "content": "Summarise T: body"}]


def test_template_missing_field_names_it() -> None:
    with pytest.raises(InputError) as info:
        build({"title": "T"}, template="{{ title }} {{ text }}")
    assert info.value.field == "text"
    assert "in.jsonl:1" in str(info.value)


def test_extra_body_is_merged_and_wins() -> None:
    body = build({"prompt": "x"}, max_tokens=5,
                 extra_body={"top_k": 20, "max_tokens": 9, "response_format": {"type": "json"}})
    assert body["top_k"] == 20
    assert body["max_tokens"] == 9
    assert body["response_format"] == {"type": "json"}


def test_custom_prompt_field() -> None:
    body = build({"question": "Why?"}, prompt_field="question")
    assert body["messages"][0]["content"] == "Why?"


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"text": "no prompt"}, "prompt", "missing"),
        ({"prompt": 3}, "prompt", "expected a string"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"content": "x"}]}, "messages", "role"),
    ],
)
def test_bad_rows_name_the_field(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        build(data)
    assert info.value.field == field
    assert words in str(info.value)


def test_messages_with_completions_is_a_bad_row() -> None:
    with pytest.raises(InputError, match="needs --endpoint chat"):
        build({"messages": [{"role": "user", "content": "x"}]}, endpoint="completions")


def test_system_with_completions_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--system needs --endpoint chat"):
        RunConfig(input=Path("a.jsonl"), output=Path("b.jsonl"), endpoint="completions",
                  system="x")


def test_requests_reach_the_server_as_built(simulator: SimulatorProcess, tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "first"},
            {"id": "b", "messages": [{"role": "user", "content": "second"}]}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                     "--system", "S", "--max-tokens", "4", "--extra-body", '{"top_k": 5}')
    assert result.returncode == 0, result.stderr
    seen = sorted(simulator.requests(), key=lambda body: str(body["messages"]))
    assert seen[0]["messages"] == [{"role": "system", "content": "S"},
                                   {"role": "user", "content": "first"}]
    assert seen[1]["messages"] == [{"role": "system", "content": "S"},
                                   {"role": "user", "content": "second"}]
    assert all(body["top_k"] == 5 and body["max_tokens"] == 4 for body in seen)
    assert all(body["model"] == "sim-model" for body in seen)
    assert {r["id"] for r in read_jsonl(out)} == {"a", "b"}
