"""``--group-by-prefix``: rows sharing a prompt prefix are sent together, each once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from vbatch import ConfigError, RunConfig, run
from vbatch.source.prefix import PrefixOrder, prefix_key, prompt_text
from vbatch.source.readers import read_rows

from .conftest import InProcessServer, read_jsonl, write_jsonl

SYSTEMS = {name: f"You are assistant {name}. " + f"Example {name}: an answer. " * 60
           for name in "ABC"}


def interleaved(count: int) -> list[dict[str, object]]:
    names = itertools.cycle("ABC")
    return [{"id": f"r{i}", "messages": [{"role": "system", "content": SYSTEMS[next(names)]},
                                         {"role": "user", "content": f"question {i}"}]}
            for i in range(count)]


def system_of(body: dict[str, object]) -> str:
    messages = body["messages"]
    assert isinstance(messages, list)
    return str(messages[0]["content"])[len("You are assistant ")]


def test_keys_group_shared_prefixes_and_keep_input_order_within(tmp_path: Path) -> None:
    long_a = "a" * 5000
    texts = [long_a + "1", "short", long_a + "2", "a" * 100 + "b" * 4000, long_a + "3"]
    keys = [prefix_key(t) for t in texts]
    assert keys[0] == keys[2] == keys[4]
    assert len({keys[0], keys[1], keys[3]}) == 3
    assert keys[3] >> 48 == keys[0] >> 48
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": t} for t in texts])
    order = PrefixOrder()
    for row in read_rows(source):
        assert row.data is not None
        order.add(row, {"prompt": row.data["prompt"]})
    sequence = order.order()
    assert [i for i in sequence.tolist() if i in (0, 2, 4)] == [0, 2, 4]
    positions = {index: place for place, index in enumerate(sequence.tolist())}
    assert sorted(positions[i] for i in (0, 2, 4)) == [positions[0], positions[0] + 1,
                                                      positions[0] + 2]
    rows = list(order.rows(source, sequence))
    assert [r.index for r in rows] == sequence.tolist()
    assert [r.data for r in rows] == [{"prompt": texts[i]} for i in sequence.tolist()]
    assert rows[0].location == f"{source}:{sequence[0] + 1}"


def test_prompt_text_of_chat_starts_with_the_system_message() -> None:
    text = prompt_text({"messages": [{"role": "system", "content": "S"},
                                     {"role": "user", "content": "U"}]})
    assert text.startswith("system\x01S") and text.endswith("user\x01U")


def test_rows_are_sent_grouped_and_recorded_once(fake_server: InProcessServer, tmp_path: Path
                                                 ) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", interleaved(90))
    out = tmp_path / "out.jsonl"
    config = RunConfig(input=source, output=out, base_url=fake_server.url, max_tokens=2,
                       concurrency=1, group_by_prefix=True, ordered=True, quiet=True)
    assert fake_server.run(config).exit_code == 0
    sent = [system_of(body) for body in fake_server.requests()]
    assert len(sent) == 90
    assert sum(1 for a, b in itertools.pairwise(sent) if a != b) == 2
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(90)]


def test_ungrouped_run_interleaves(fake_server: InProcessServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", interleaved(30))
    config = RunConfig(input=source, output=tmp_path / "out.jsonl", base_url=fake_server.url,
                       max_tokens=2, concurrency=1, quiet=True)
    fake_server.run(config)
    sent = [system_of(body) for body in fake_server.requests()]
    assert sum(1 for a, b in itertools.pairwise(sent) if a != b) == 29


def test_resume_with_grouping_sends_only_the_rest(fake_server: InProcessServer, tmp_path: Path
                                                  ) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", interleaved(30))
    out = tmp_path / "out.jsonl"
    write_jsonl(tmp_path / "first.jsonl", interleaved(30)[:10])
    first = RunConfig(input=tmp_path / "first.jsonl", output=out, base_url=fake_server.url,
                      max_tokens=2, concurrency=1, quiet=True, group_by_prefix=True)
    fake_server.run(first)
    fake_server.reset()
    result = fake_server.run(first.replace(input=source))
    assert result.stats.already_done == 10 and result.stats.ok == 20
    assert len(fake_server.requests()) == 20
    assert sorted(r["index"] for r in read_jsonl(out)) == list(range(30))


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl.gz"])
def test_inputs_that_cannot_be_read_out_of_order_are_refused(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    source.write_bytes(b"")
    config = RunConfig(input=source, output=tmp_path / "out.jsonl",
                       base_url="http://127.0.0.1:9/v1", model="m", group_by_prefix=True,
                       quiet=True)
    with pytest.raises(ConfigError, match="uncompressed JSONL"):
        run(config)
