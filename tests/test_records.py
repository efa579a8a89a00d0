"""What a record keeps of the server's answer, and which ok rows count as empty."""

from __future__ import annotations

from pathlib import Path

from vbatch import RunConfig

from .conftest import InProcessServer, read_jsonl, write_jsonl


def rows(count: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(count)]


def test_reasoning_tool_calls_and_full_usage_are_kept(fake_server: InProcessServer,
                                                      tmp_path: Path) -> None:
    fake_server.configure(answer_style="reasoning_tools")
    source = write_jsonl(tmp_path / "in.jsonl", rows(20))
    out = tmp_path / "out.jsonl"
    result = fake_server.run(RunConfig(input=source, output=out, base_url=fake_server.url,
                                       max_tokens=8, quiet=True))
    assert result.stats.ok == 20 and result.stats.empty == 0
    for record in read_jsonl(out):
        assert record["text"] is None
        assert record["reasoning"].startswith("I should look up")
        assert record["tool_calls"][0]["function"]["name"] == "lookup"
        usage = record["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert "cached_tokens" in usage["prompt_tokens_details"]
        assert "reasoning_tokens" in usage["completion_tokens_details"]


def test_plain_answers_carry_no_extra_fields(fake_server: InProcessServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out.jsonl"
    result = fake_server.run(RunConfig(input=source, output=out, base_url=fake_server.url,
                                       max_tokens=8, quiet=True))
    assert result.stats.ok == 3
    records = read_jsonl(out)
    assert len(records) == 3
    for record in records:
        assert record["status"] == "ok" and record["text"]
        assert not {"reasoning", "tool_calls", "refusal", "logprobs"} & set(record)


def test_ok_rows_without_any_answer_are_counted_empty(fake_server: InProcessServer,
                                                      tmp_path: Path) -> None:
    fake_server.configure(answer_style="empty")
    source = write_jsonl(tmp_path / "in.jsonl", rows(6))
    result = fake_server.run(RunConfig(input=source, output=tmp_path / "out.jsonl",
                                       base_url=fake_server.url, max_tokens=8, quiet=True))
    assert result.stats.ok == 6 and result.stats.empty == 6
    assert "empty: 6 ok rows have no text" in result.stats.summary_text()
    assert result.stats.to_dict()["rows_empty"] == 6
