"""Structured outputs against the server doubles: specs, the check of every answer, retries of
invalid ones, per-row and batch-line specs, the server's form, typed columns (the real server's
tests are in test_vllm_structured.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pydantic
import pytest

import vbatch
from vbatch import ConfigError, InputError, ManifestMismatchError, RunConfig
from vbatch.structured.answers import AnswerRules, check_answer, reseeded
from vbatch.structured.parse import spec_of_body, spec_of_options, spec_of_value
from vbatch.structured.server import form_of_version
from vbatch.structured.specs import FORM_GUIDED, FORM_STRUCTURED

from .conftest import InProcessServer, read_jsonl, run_cli, write_jsonl

PERSON = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                         "mood": {"enum": ["happy", "sad"]},
                         "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "mood"]}


class Pet(pydantic.BaseModel):
    name: str
    age: int
    kind: Literal["cat", "dog"]
    text: str


def rows(tmp_path: Path, count: int, **extra: Any) -> Path:
    return write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"r{i}", "prompt": f"describe person {i}", **extra}
                        for i in range(count)])


def config(fake_server: InProcessServer, tmp_path: Path, source: Path, **options: Any
           ) -> RunConfig:
    return RunConfig(input=source, output=tmp_path / "out.jsonl", base_url=fake_server.url,
                     quiet=True, max_tokens=200, **options)


# --- specs -----------------------------------------------------------------------------------

def test_a_spec_says_what_each_server_form_takes() -> None:
    schema = vbatch.JsonSchema(PERSON, "person")
    assert schema.request_fields(True, FORM_STRUCTURED) == {"response_format": {
        "type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}}
    assert schema.request_fields(False, FORM_STRUCTURED) == {"structured_outputs":
                                                             {"json": PERSON}}
    assert schema.request_fields(False, FORM_GUIDED) == {"guided_json": PERSON}
    assert vbatch.Regex("[0-9]+").request_fields(True, FORM_GUIDED) == {"guided_regex": "[0-9]+"}
    assert vbatch.Choice(["a", "b"]).request_fields(False, FORM_STRUCTURED) == {
        "structured_outputs": {"choice": ["a", "b"]}}
    assert vbatch.JsonObject().request_fields(True, FORM_STRUCTURED) == {
        "response_format": {"type": "json_object"}}
    assert vbatch.Grammar("root ::= x").request_fields(False, FORM_STRUCTURED) == {
        "structured_outputs": {"grammar": "root ::= x"}}


def test_versions_tell_the_forms_apart() -> None:
    assert form_of_version("0.32.0") == FORM_STRUCTURED
    assert form_of_version("0.10.2") == FORM_STRUCTURED
    assert form_of_version("0.10.1.1") == FORM_GUIDED
    assert form_of_version("0.6.3.post1") == FORM_GUIDED
    assert form_of_version(None) == FORM_STRUCTURED


@pytest.mark.parametrize(("options", "words"), [
    ({"json_schema": '{"type": "strin"}'}, "--json-schema: not a valid JSON Schema"),
    ({"json_schema": "{not json"}, "--json-schema is not valid JSON"),
    ({"regex": "[0-9"}, "--regex: not a valid regular expression"),
    ({"regex": "a", "choice": ("x",)}, "--regex and --choice both say"),
    ({"choice": ("",)}, "--choice: a choice list is a non-empty list"),
])
def test_a_bad_spec_is_one_line_naming_its_option(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match="^" + words.replace("[", r"\[")):
        spec_of_options(**options)


def test_specs_come_from_python_values(tmp_path: Path) -> None:
    from_model = spec_of_value(Pet)
    assert isinstance(from_model, vbatch.JsonSchema) and from_model.model is Pet
    assert spec_of_value({"type": "json_object"}) == vbatch.JsonObject()
    openai = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    assert spec_of_value(openai) == vbatch.JsonSchema(PERSON)
    assert spec_of_value(["yes", "no"]) == vbatch.Choice(["yes", "no"])
    with pytest.raises(ConfigError, match="must be a pydantic model class"):
        spec_of_value("a string")
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(PERSON))
    assert spec_of_options(json_schema=str(path)) == vbatch.JsonSchema(PERSON)
    assert spec_of_options(json_schema="@" + str(path)) == vbatch.JsonSchema(PERSON)


def test_specs_travel_to_ray_workers() -> None:
    import pickle

    for spec in (vbatch.JsonSchema(PERSON), vbatch.Regex("a+"), vbatch.Choice(["x"]),
                 vbatch.Grammar("root ::= x"), vbatch.JsonObject(), spec_of_value(Pet)):
        copy = pickle.loads(pickle.dumps(spec))
        assert copy == spec
    assert pickle.loads(pickle.dumps(spec_of_value(Pet))).check('{"a": 1}')[1] is not None


def test_batch_bodies_name_their_spec_in_every_form() -> None:
    assert spec_of_body({"guided_regex": "a+"}) == vbatch.Regex("a+")
    assert spec_of_body({"structured_outputs": {"choice": ["x"]}}) == vbatch.Choice(["x"])
    assert spec_of_body({"response_format": {"type": "text"}}) is None
    assert spec_of_body({"messages": []}) is None


# --- checking answers ------------------------------------------------------------------------

def answer(text: Any, reason: str = "stop", tokens: int = 9) -> dict[str, Any]:
    return {"status": "ok", "text": text, "finish_reason": reason,
            "usage": {"completion_tokens": tokens}}


def test_every_answer_is_parsed_or_invalid_with_its_reason() -> None:
    spec, rules = vbatch.JsonSchema(PERSON), AnswerRules()
    record = answer('{"name": "Ann", "age": 3, "mood": "sad"}')
    check_answer(record, spec, rules, 64)
    assert record["parsed"] == {"name": "Ann", "age": 3, "mood": "sad"}
    cases = [(answer('{"name": "Ann", "age": '), "not_json", "not JSON"),
             (answer('{"name": "Ann", "age": -1, "mood": "sad"}'), "schema", "at age"),
             (answer('{"name": "Ann"}'), "schema", '"age" is a required property'),
             (answer('{"name": "Ann", "age": 3, "mood": "sad"}', "length", 64), "length",
              "finish_reason length after 64 tokens: the answer was cut before it was "
              "complete; raise --max-tokens")]
    for record, reason, words in cases:
        with pytest.raises(vbatch.InvalidOutputError) as caught:
            check_answer(record, spec, rules, 64)
        assert caught.value.reason == reason and words in caught.value.message
    with pytest.raises(vbatch.InvalidOutputError, match="not one of 'yes', 'no'"):
        check_answer(answer("maybe"), vbatch.Choice(["yes", "no"]), rules, 8)
    with pytest.raises(vbatch.InvalidOutputError, match="does not match the regular"):
        check_answer(answer("2024-1-1"), vbatch.Regex(r"\d{4}-\d{2}-\d{2}"), rules, 8)


def test_finish_reasons_that_invalidate_are_configurable() -> None:
    record = answer("yes", "length")
    check_answer(record, vbatch.Choice(["yes"]), AnswerRules(invalid_finish_reasons=()), 1)
    assert record["parsed"] == "yes"
    many = {"status": "ok", "text": ["yes", "no"], "finish_reason": ["stop", "stop"]}
    check_answer(many, vbatch.Choice(["yes", "no"]), AnswerRules(), 1)
    assert many["parsed"] == ["yes", "no"]


def test_a_retry_changes_the_seed_and_nothing_else() -> None:
    body = orjson.dumps({"seed": 5, "messages": [1]})
    again = orjson.loads(reseeded(body, 1))
    assert again["seed"] != 5 and again["messages"] == [1]
    assert orjson.loads(reseeded(body, 2))["seed"] != again["seed"]


# --- runs ------------------------------------------------------------------------------------

def test_a_schema_run_checks_every_answer_and_retries_invalid_ones(
        fake_server: InProcessServer, tmp_path: Path) -> None:
    fake_server.configure(invalid_rate=0.5)
    result = fake_server.run(config(fake_server, tmp_path, rows(tmp_path, 60), seed=1,
                                    response_format=PERSON))
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 60
    validator = jsonschema_rs.validator_for(PERSON)
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] == "failed"]
    assert ok and failed
    for record in ok:
        assert validator.is_valid(record["parsed"]) and json.loads(record["text"]) == \
            record["parsed"]
    for record in failed:
        assert record["error"]["type"] == "invalid_output"
        assert record["error"]["reason"] == "not_json"
        assert record["text"] and record["parsed"] is None and record["attempts"] == 3
        assert "raise --max-invalid-retries" in record["error"]["message"]
    assert any(r["attempts"] > 1 for r in ok)
    for record in records:
        retried = record["attempts"] - (record["status"] == "ok")
        assert record.get("invalid_answers", {}) == ({"not_json": retried} if retried else {})
    stats = result.stats
    assert stats.invalid_answers["not_json"] == sum(r["attempts"] - 1 for r in ok) + 3 * len(
        failed)
    assert "invalid answers:" in stats.summary_text()
    from vbatch.report.data import load_report_data
    data = load_report_data(tmp_path / "out.jsonl")
    assert data.invalid_answers == stats.invalid_answers
    assert data.failures == {"invalid_output (not_json)": len(failed)}
    assert stats.failure_counts() == {"invalid_output (not_json)": len(failed)}
    seeds = {r.get("seed") for r in fake_server.requests() if r["messages"][-1]["content"]
             == "describe person 0"}
    assert len(seeds) == next(r for r in records if r["id"] == "r0")["attempts"]


def test_an_answer_cut_by_max_tokens_fails_with_the_hint(fake_server: InProcessServer,
                                                         tmp_path: Path) -> None:
    result = fake_server.run(config(fake_server, tmp_path, rows(tmp_path, 3),
                                    response_format=PERSON).replace(max_tokens=3))
    assert result.exit_code == 1
    for record in read_jsonl(tmp_path / "out.jsonl"):
        assert record["status"] == "failed" and record["attempts"] == 3
        assert record["error"]["reason"] == "length"
        assert "raise --max-tokens" in record["error"]["message"]
        assert record["finish_reason"] == "length" and record["text"]


def test_a_greedy_request_is_not_asked_again(fake_server: InProcessServer,
                                             tmp_path: Path) -> None:
    fake_server.configure(invalid_rate=1.0)
    fake_server.run(config(fake_server, tmp_path, rows(tmp_path, 3), temperature=0,
                           response_format=PERSON))
    for record in read_jsonl(tmp_path / "out.jsonl"):
        assert record["attempts"] == 1 and record["error"]["type"] == "invalid_output"
    assert fake_server.stats()["requests_seen"] == 4


def test_rows_carry_their_own_schema_or_choices(fake_server: InProcessServer,
                                                tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [
        {"prompt": "label it", "shape": ["spam", "ham"]},
        {"prompt": "extract", "shape": PERSON},
        {"prompt": "extract again", "shape": json.dumps(PERSON)},
        {"prompt": "the run's", "shape": None}])
    fake_server.run(config(fake_server, tmp_path, source, schema_field="shape",
                           response_format=vbatch.Choice(["x", "y"])))
    records = {r["index"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert records[0]["parsed"] in ("spam", "ham")
    assert jsonschema_rs.validator_for(PERSON).is_valid(records[1]["parsed"])
    assert records[2]["parsed"].keys() == records[1]["parsed"].keys()
    assert records[3]["parsed"] in ("x", "y")
    sent = [r for r in fake_server.requests() if r["max_tokens"] == 200]
    assert len(sent) == 4
    assert sent[0]["messages"] != [{"role": "user", "content": "Hi"}]


def test_a_bad_row_schema_stops_before_anything_is_sent(fake_server: InProcessServer,
                                                        tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "shape": PERSON},
                                                 {"prompt": "b", "shape": {"type": "strin"}}])
    with pytest.raises(InputError, match=r"in.jsonl:2: field 'shape': not a valid JSON Schema"):
        fake_server.run(config(fake_server, tmp_path, source, schema_field="shape"))
    assert fake_server.stats()["requests_seen"] == 0


def test_the_server_form_is_asked_once_and_used(fake_server: InProcessServer,
                                                tmp_path: Path) -> None:
    fake_server.configure(version="0.8.5")
    fake_server.run(config(fake_server, tmp_path, rows(tmp_path, 3), endpoint="completions",
                           response_format=vbatch.Regex("[0-9]{3}")))
    sent = fake_server.requests()
    assert all(r.get("guided_regex") == "[0-9]{3}" and "structured_outputs" not in r
               for r in sent)
    assert {r["status"] for r in read_jsonl(tmp_path / "out.jsonl")} == {"ok"}


def test_the_old_form_sent_to_a_new_server_is_caught(fake_server: InProcessServer,
                                                     tmp_path: Path) -> None:
    body = {"prompt": "a number", "max_tokens": 20, "guided_regex": "[0-9]{3}"}
    source = write_jsonl(tmp_path / "batch.jsonl", [
        {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": body}])
    fake_server.run(RunConfig(input=source, output=tmp_path / "out.jsonl",
                              base_url=fake_server.url, quiet=True))
    line = read_jsonl(tmp_path / "out.jsonl")[0]
    assert line["error"]["code"] == "invalid_output"
    assert "does not match the regular expression" in line["error"]["message"]


def test_a_spec_in_extra_body_is_sent_as_the_server_takes_it(fake_server: InProcessServer,
                                                             tmp_path: Path) -> None:
    fake_server.run(config(fake_server, tmp_path, rows(tmp_path, 2), endpoint="completions",
                           extra_body={"guided_regex": "[0-9]{3}"}))
    assert all(r["structured_outputs"] == {"regex": "[0-9]{3}"}
               for r in fake_server.requests())
    assert {r["status"] for r in read_jsonl(tmp_path / "out.jsonl")} == {"ok"}


def test_a_grammar_the_server_refuses_stops_the_run_before_the_rows(
        fake_server: InProcessServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--grammar: the server cannot use it: Grammar"):
        fake_server.run(config(fake_server, tmp_path, rows(tmp_path, 5),
                               response_format=vbatch.Grammar("root ::= SIM_BAD_GRAMMAR")))
    assert fake_server.stats()["requests_seen"] == 1
    assert not (tmp_path / "out.jsonl").exists() or not read_jsonl(tmp_path / "out.jsonl")


def test_a_changed_schema_is_a_changed_request(fake_server: InProcessServer,
                                               tmp_path: Path) -> None:
    source = rows(tmp_path, 4)
    fake_server.run(config(fake_server, tmp_path, source, response_format=PERSON))
    first = {r["id"]: r["request_hash"] for r in read_jsonl(tmp_path / "out.jsonl")}
    changed = {**PERSON, "required": ["name"]}
    with pytest.raises(ManifestMismatchError, match="response_format"):
        fake_server.run(config(fake_server, tmp_path, source, response_format=changed))
    fake_server.reset()
    fake_server.run(config(fake_server, tmp_path, source, response_format=changed, force=True))
    again = {r["id"]: r["request_hash"] for r in read_jsonl(tmp_path / "out.jsonl")}
    assert len([r for r in fake_server.requests() if r["max_tokens"] == 200]) == 4
    assert all(first[i] != again[i] for i in first)


def test_a_batch_lines_response_format_is_checked(fake_server: InProcessServer,
                                                  tmp_path: Path) -> None:
    fake_server.configure(invalid_rate=1.0)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "p", "schema": PERSON}}}
    source = write_jsonl(tmp_path / "batch.jsonl", [
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}])
    out = tmp_path / "out.jsonl"
    fake_server.run(RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True,
                              max_invalid_retries=1))
    line = read_jsonl(out)[0]
    assert line["custom_id"] == "a" and line["error"]["code"] == "invalid_output"
    assert fake_server.stats()["requests_seen"] == 2


def test_typed_columns_for_a_dataframe_and_models_for_a_list(fake_server: InProcessServer,
                                                             tmp_path: Path) -> None:
    frame = pd.DataFrame({"prompt": ["a pet", "another"], "name": ["x", "y"]})
    out = vbatch.generate(frame, base_url=fake_server.url, transport=fake_server.transport,
                          response_format=Pet, max_tokens=200, progress=False)
    assert str(out["age"].dtype) == "int64" and str(out["kind"].dtype) == "category"
    assert list(out["name"]) == ["x", "y"] and out["name_result"].str.startswith("w").all()
    assert "text_parsed" in out.columns and "parsed" not in out.columns
    records = vbatch.generate(["a", "b"], base_url=fake_server.url,
                              transport=fake_server.transport, response_format=Pet,
                              max_tokens=200, progress=False, as_models=True)
    assert all(isinstance(r["parsed"], Pet) for r in records)
    with pytest.raises(ConfigError, match="as_models=True gives pydantic objects"):
        vbatch.generate(frame, base_url=fake_server.url, transport=fake_server.transport,
                        response_format=Pet, as_models=True, progress=False)


def test_parquet_holds_the_schemas_types(fake_server: InProcessServer, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    fake_server.run(config(fake_server, tmp_path, rows(tmp_path, 5),
                           response_format=PERSON).replace(output=out))
    schema = pq.read_schema(out)
    assert str(schema.field("age").type) == "int64"
    assert str(schema.field("tags").type) == "list<element: string>"
    assert str(schema.field("mood").type).startswith("dictionary<values=string")
    frame = pd.read_parquet(out)
    assert frame["age"].dtype == "int64" and frame["mood"].dtype == "category"


def test_cli_options_and_exit_status(simulator: Any, tmp_path: Path) -> None:
    source = rows(tmp_path, 4)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(PERSON))
    out = tmp_path / "out.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                   "--json-schema", str(schema), "--max-tokens", "100")
    assert done.returncode == 0, done.stderr
    assert "structured outputs: sent as response_format" in done.stderr
    assert all("parsed" in r for r in read_jsonl(out))
    bad = run_cli("run", str(source), "-o", str(tmp_path / "b.jsonl"), "--base-url",
                  simulator.url, "--regex", "[a-")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "vbatch: error: --regex: not a valid regular expression: unterminated character set "
        "at position 0"]
