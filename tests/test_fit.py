"""Every request fits: the policy, vLLM's context errors, the plan (simulator and units)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vbatch import RunConfig, run
from vbatch.errors import HTTPStatusError
from vbatch.prepare.fit import (
    ContextError,
    fit_row,
    fitting_context,
    parse_context_error,
    refit,
)
from vbatch.prepare.plan import make_plan
from vbatch.prepare.tokens import BoundedTokenCounter, token_bound

from .conftest import InProcessServer, SimulatorProcess, read_jsonl, run_cli, write_jsonl


def test_fit_row_policies() -> None:
    assert fit_row(10, 20, 50, "clamp").max_tokens == 20
    clamped = fit_row(40, 20, 50, "clamp")
    assert clamped.clamped and clamped.max_tokens == 10
    skipped = fit_row(40, 20, 50, "skip")
    assert skipped.problem is not None
    assert "40 prompt tokens + max_tokens 20 = 60 > " in skipped.problem
    for policy in ("clamp", "skip"):
        assert fit_row(50, 20, 50, policy).problem is not None
    assert fit_row(49, None, 50, "clamp").max_tokens is None


def test_refit_lowers_the_field_the_request_gave() -> None:
    overflow = ContextError(context=512, prompt_tokens=500)
    body: dict[str, Any] = {"messages": [], "max_completion_tokens": 100}
    assert refit(body, overflow, None, None, 100) == 12
    assert body == {"messages": [], "max_completion_tokens": 12}
    plain: dict[str, Any] = {"prompt": "x", "max_tokens": 100}
    assert refit(plain, overflow, None, None, 100) == 12
    assert plain == {"prompt": "x", "max_tokens": 12}


def test_refit_uses_our_counts_when_the_server_gives_none() -> None:
    body: dict[str, Any] = {"max_tokens": 40}
    # Our count says it fits: the server counted more and did not say: lower by a quarter.
    assert refit(body, ContextError(), 512, 100, 40) == 30
    assert body["max_tokens"] == 30
    assert refit({"max_tokens": 40}, ContextError(), None, 100, 40) is None
    assert refit({"max_tokens": 40}, ContextError(context=100, prompt_tokens=100), None, None,
                 40) is None


def test_fitting_context_rounds_up_and_caps() -> None:
    assert fitting_context(300, None) == 512
    assert fitting_context(512, None) == 512
    assert fitting_context(513, 8192) == 768
    assert fitting_context(10_000, 8192) == 8192
    assert fitting_context(3, None) == 256


@pytest.mark.parametrize(
    ("message", "param", "code", "expected"),
    [
        ("This model's maximum context length is 4096 tokens. However, you requested 4200 tokens "
         "(4000 in the messages, 200 in the completion). Please reduce the length of the "
         "messages or completion.", None, None, ContextError(4096, 4000, 200)),
        ("'max_tokens' or 'max_completion_tokens' is too large: 300. This model's maximum context "
         "length is 512 tokens and your request has 400 input tokens (300 > 512 - 400).",
         None, None, ContextError(512, 400, 300)),
        ("You passed 600 input tokens and requested 100 output tokens. However, the model's "
         "context length is only 512 tokens, resulting in a maximum input length of 412 tokens.",
         None, None, ContextError(512, 600, 100)),
        ("This model's maximum context length is 128000 tokens. However, you requested 65535 "
         "output tokens and your prompt contains at least 62466 input tokens, for a total of at "
         "least 128001 tokens.", None, None, ContextError(128000, 62466, 65535)),
        ("This model's maximum context length is 2048 tokens. However, your prompt contains at "
         "least 2049 input tokens, which exceeds this limit even without any output tokens.",
         "input_tokens", 400, ContextError(2048, 2049, None)),
        ("max_tokens=5000 cannot be greater than max_model_len=2048. Please request fewer output "
         "tokens. (parameter=max_tokens, value=5000)", "max_tokens", 400,
         ContextError(2048, None, 5000)),
        ("The decoder prompt (length 3000) is longer than the maximum model length of 2048.",
         None, None, ContextError(2048, 3000, None)),
        ("the request exceeds the available context size", None, "context_length_exceeded",
         ContextError()),
    ],
)
def test_every_known_context_error_is_recognised(
    message: str, param: str | None, code: Any, expected: ContextError
) -> None:
    error = HTTPStatusError(400, message, param=param, code=code)
    assert parse_context_error(error) == expected


def test_other_errors_are_not_context_errors() -> None:
    assert parse_context_error(HTTPStatusError(400, "temperature must be positive")) is None
    assert parse_context_error(HTTPStatusError(503, "maximum context length is 5")) is None


def test_plan_quantiles_histogram_and_limit() -> None:
    plan = make_plan(list(range(1, 101)), max_tokens=50, model_context=8192, max_model_len=None)
    assert plan.quantiles == {"min": 1, "max": 100, "p50": 50, "p95": 95, "p99": 99}
    assert plan.fitting_max_model_len == 256
    assert sum(count for _, count in plan.histogram) == 100
    assert plan.histogram[0] == (16, 16)


def words(count: int) -> str:
    return " ".join(f"w{i}" for i in range(count))


def overflow_rows(tmp_path: Path) -> Path:
    # The simulator counts whitespace words; chat adds one word ("user:") per message.
    rows = [{"id": "short", "prompt": words(9)}, {"id": "clamp", "prompt": words(39)},
            {"id": "huge", "prompt": words(59)}]
    return write_jsonl(tmp_path / "in.jsonl", rows)


def overflow_run(sim: SimulatorProcess, tmp_path: Path, policy: str) -> dict[str, Any]:
    sim.configure(max_model_len=50, completion_tokens=100)
    cfg = RunConfig(input=overflow_rows(tmp_path), output=tmp_path / f"{policy}.jsonl",
                    base_url=sim.url, quiet=True, max_tokens=20, on_overflow=policy)  # type: ignore[arg-type]
    result = run(cfg)
    return {"result": result,
            "records": {r["id"]: r for r in read_jsonl(tmp_path / f"{policy}.jsonl")}}


def test_clamp_lowers_max_tokens_and_fails_what_cannot_fit(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    outcome = overflow_run(simulator, tmp_path, "clamp")
    records = outcome["records"]
    assert records["short"]["status"] == "ok" and "clamped_max_tokens" not in records["short"]
    assert records["short"]["usage"] == {"prompt_tokens": 10, "completion_tokens": 20,
                                         "total_tokens": 30}
    assert records["clamp"]["status"] == "ok"
    assert records["clamp"]["clamped_max_tokens"] == 10
    assert records["clamp"]["usage"]["completion_tokens"] == 10
    assert records["huge"]["status"] == "failed"
    assert records["huge"]["error"]["type"] == "context_overflow"
    assert "60 tokens and the context is 50" in records["huge"]["error"]["message"]
    assert outcome["result"].stats.clamped == 1
    assert {b["messages"][0]["content"][:3] for b in simulator.requests()} == {"w0 "}
    assert len(simulator.requests()) == 2


def test_skip_records_context_overflow_with_numbers(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    records = overflow_run(simulator, tmp_path, "skip")["records"]
    assert records["short"]["status"] == "ok"
    assert records["clamp"]["status"] == "failed"
    assert records["clamp"]["error"]["type"] == "context_overflow"
    assert "40 prompt tokens + max_tokens 20 = 60 > the context of 50" in (
        records["clamp"]["error"]["message"])
    assert records["huge"]["error"]["type"] == "context_overflow"
    assert len(simulator.requests()) == 1


def test_fail_stops_before_sending_and_lists_ids(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    simulator.configure(max_model_len=50)
    result = run_cli("run", str(overflow_rows(tmp_path)), "-o", str(tmp_path / "out.jsonl"),
                     "--base-url", simulator.url, "--max-tokens", "20", "--on-overflow", "fail")
    assert result.returncode == 2
    assert "2 rows do not fit a context of 50 tokens" in result.stderr
    assert "clamp (40 tokens)" in result.stderr and "huge (60 tokens)" in result.stderr
    assert simulator.stats()["requests_seen"] == 0


@pytest.mark.parametrize("style", ["requested", "too-large", "you-passed", "at-least"])
def test_tokenizer_mismatch_400_is_clamped_and_retried_once(
    fake_server: InProcessServer, tmp_path: Path, style: str
) -> None:
    fake_server.configure(max_model_len=50, completion_tokens=100, tokenize_scale=0.5,
                          context_error_style=style)
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": words(39)}])
    result = fake_server.run(RunConfig(input=source, output=tmp_path / "out.jsonl",
                                       base_url=fake_server.url, quiet=True, max_tokens=20))
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert result.exit_code == 0
    assert record["status"] == "ok" and record["attempts"] == 2
    assert record["clamped_max_tokens"] == 10
    assert record["usage"]["completion_tokens"] == 10


def test_unnumbered_context_error_never_crashes(fake_server: InProcessServer, tmp_path: Path
                                                ) -> None:
    fake_server.configure(max_model_len=50, completion_tokens=100, tokenize_scale=0.5,
                        context_error_style="llama-cpp")
    rows = [{"id": "a", "prompt": words(34)}, {"id": "b", "prompt": words(45)}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    fake_server.run(RunConfig(input=source, output=tmp_path / "out.jsonl", base_url=fake_server.url,
                  quiet=True, max_tokens=20))
    records = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert records["a"]["status"] == "ok" and records["a"]["clamped_max_tokens"] == 15
    assert records["b"]["status"] == "failed"
    assert records["b"]["error"]["type"] == "context_overflow"
    assert records["b"]["attempts"] == 2


def test_silent_cut_by_the_context_is_flagged(simulator: SimulatorProcess, tmp_path: Path
                                              ) -> None:
    simulator.configure(max_model_len=50, completion_tokens=100, tokenize_scale=0.5)
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": words(39)}])
    stats = tmp_path / "stats.json"
    result = run_cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
                     simulator.url, "--max-tokens", "20", "--stats-json", str(stats))
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["finish_reason"] == "length" and record["context_truncated"] is True
    assert record["usage"]["completion_tokens"] == 10
    assert "cut by the context: 1 outputs" in result.stderr
    assert '"rows_cut_by_context": 1' in stats.read_text()


def test_no_tokenize_endpoint_still_runs(simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    result = run_cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
                     simulator.url + "/../nothing/v1")
    assert result.returncode in (0, 1, 2)
    assert "Traceback" not in result.stderr


def test_token_bound() -> None:
    assert token_bound({"prompt": "héllo"}) == 6 + 16
    chat = {"messages": [{"role": "system", "content": "ab"}, {"role": "user", "content": "c"}]}
    assert token_bound(chat) == 512 + 2 + 16 + 1 + 16
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    assert token_bound(image) is None


class LengthCounter:
    """Counts one token per character, and how many rows it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def count(self, contents: list[dict[str, Any]]) -> list[int]:
        self.asked += [c["prompt"] for c in contents]
        return [len(c["prompt"]) for c in contents]


def test_bounded_counter_makes_the_exact_one_only_when_a_row_needs_it() -> None:
    made: list[LengthCounter] = []

    def exact() -> LengthCounter:
        made.append(LengthCounter())
        return made[-1]

    counter = BoundedTokenCounter(exact, fits=lambda tokens, asked: tokens + 10 <= 100)
    assert counter.count([{"prompt": "a" * 5}, {"prompt": "b" * 70}]) == [5 + 16, 70 + 16]
    assert made == []
    long, image = {"prompt": "c" * 80}, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {}}]}]}
    assert counter.count([{"prompt": "d"}, long])[0] == 1 + 16
    assert len(made) == 1 and made[0].asked == ["c" * 80]
    assert counter.count([long, {"prompt": "e" * 90}]) == [80, 90]
    assert len(made) == 1 and made[0].asked == ["c" * 80, "c" * 80, "e" * 90]
    with pytest.raises(KeyError):
        counter.count([image])


def test_rows_that_surely_fit_are_not_tokenized(fake_server: InProcessServer, tmp_path: Path
                                                ) -> None:
    fake_server.configure(max_model_len=2048)
    rows = [{"id": "small", "prompt": words(5)}, {"id": "big", "prompt": words(400)}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = fake_server.run(RunConfig(input=source, output=tmp_path / "out.jsonl",
                                       base_url=fake_server.url, quiet=True, max_tokens=20))
    assert result.exit_code == 0
    assert fake_server.stats()["tokenize_requests"] == 2
