"""``--group-by-prefix``: rows sharing a prompt prefix are sent together, each once."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import random
import subprocess
from pathlib import Path

import pytest

import vbatch
from vbatch import RunConfig
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.scan import scan_input
from vbatch.settings import RequestSettings, SourceSettings
from vbatch.source.prefix import PrefixOrder, Sharing, prefix_key, prompt_text
from vbatch.source.readers import RawRow, read_rows

from .conftest import InProcessServer, SimulatorProcess, read_jsonl, vbatch_cmd, write_jsonl

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
    order = PrefixOrder(at_offsets=True)
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
                       max_tokens=2, concurrency=1, group_by_prefix="off", quiet=True)
    fake_server.run(config)
    sent = [system_of(body) for body in fake_server.requests()]
    assert sum(1 for a, b in itertools.pairwise(sent) if a != b) == 29


def run_saying(fake_server: InProcessServer, config: RunConfig) -> str:
    messages = io.StringIO()
    result = fake_server.run(config.replace(quiet=False), stream=messages)
    assert result.exit_code == 0
    return messages.getvalue()


def test_auto_groups_shared_prefixes_scattered_over_the_input(fake_server: InProcessServer,
                                                              tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", interleaved(60))
    config = RunConfig(input=source, output=tmp_path / "out.jsonl", base_url=fake_server.url,
                       max_tokens=2, concurrency=1)
    assert config.group_by_prefix == "auto"
    said = run_saying(fake_server, config)
    assert "grouping rows by prompt prefix" in said and "0% in input order" in said
    sent = [system_of(body) for body in fake_server.requests()]
    assert sum(1 for a, b in itertools.pairwise(sent) if a != b) == 2


@pytest.mark.parametrize("kind", ["distinct", "already grouped"])
def test_auto_keeps_the_input_order_where_grouping_gains_nothing(
        fake_server: InProcessServer, tmp_path: Path, kind: str) -> None:
    if kind == "distinct":
        data = [{"id": f"r{i}", "prompt": f"{i} " + "unlike any other " * (i % 7 + 20)}
                for i in range(60)]
    else:
        data = sorted(interleaved(60), key=lambda row: str(row["messages"][0]["content"]))
    source = write_jsonl(tmp_path / "in.jsonl", data)
    config = RunConfig(input=source, output=tmp_path / "out.jsonl", base_url=fake_server.url,
                       max_tokens=2, concurrency=1, endpoint="chat" if kind != "distinct"
                       else "completions")
    assert "grouping" not in run_saying(fake_server, config)
    sent = fake_server.requests()
    key = "prompt" if kind == "distinct" else "messages"
    assert [body[key] for body in sent] == [row[key] for row in data]


def test_sharing_measures_grouped_against_input_order() -> None:
    def measured(texts: list[str]) -> Sharing:
        order = PrefixOrder()
        for index, text in enumerate(texts):
            order.add(RawRow(index, f"in:{index + 1}", {}), {"prompt": text})
        return order.sharing()

    shared = "x" * 1000
    texts = [shared + str(i) if i % 2 else f"{i} alone " * 40 for i in range(100)]
    scattered = measured(texts)
    # The 49 rows after the first of the group agree on 256 characters, not on 1,024.
    assert scattered.grouped == pytest.approx(49 * 640 / sum(len(t) for t in texts))
    assert scattered.in_input_order == 0 and scattered.pays
    together = measured([shared + str(i) for i in range(50)] + [f"{i} alone" for i in range(50)])
    assert together.grouped == together.in_input_order and not together.pays
    distinct = measured([f"{i} " * 300 for i in range(1000)])
    assert distinct.grouped == 0 and not distinct.pays
    short_repeats = measured(["same short prompt"] * 4 + ["other"] * 4)
    assert short_repeats.grouped == short_repeats.in_input_order == pytest.approx(
        (3 * 17 + 3 * 5) / (4 * 17 + 4 * 5))


def write_input(path: Path, rows: list[dict[str, object]]) -> Path:
    """``rows`` as ``path``'s format: each row's system prompt and question as columns."""
    flat = [{"id": r["id"], "system": r["messages"][0]["content"],  # type: ignore[index]
             "question": r["messages"][1]["content"]} for r in rows]  # type: ignore[index]
    name = path.name
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "wt") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in flat)
    elif name.endswith(".csv"):
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["id", "system", "question"])
            writer.writeheader()
            writer.writerows(flat)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(flat), path, row_group_size=7)
    return path


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl.gz", "in.parquet"])
def test_inputs_that_cannot_seek_are_grouped_from_a_copy(fake_server: InProcessServer,
                                                         tmp_path: Path, name: str) -> None:
    source = write_input(tmp_path / name, interleaved(45))
    out = tmp_path / "out" / "out.jsonl"
    out.parent.mkdir()
    config = RunConfig(input=source, output=out, base_url=fake_server.url, max_tokens=2,
                       concurrency=1, template="{{ system }} {{ question }}",
                       group_by_prefix="on", ordered=True)
    said = run_saying(fake_server, config)
    assert f"copying the rows of {source} beside the output" in said
    sent = [system_of(body) for body in fake_server.requests()]
    assert len(sent) == 45 and sum(1 for a, b in itertools.pairwise(sent) if a != b) == 2
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(45)]
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        p.name for p in out.parent.iterdir() if not p.name.startswith(".vbatch-grouped"))


def test_a_bad_row_read_from_the_copy_keeps_its_location(fake_server: InProcessServer,
                                                          tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.csv", interleaved(9))
    lines = source.read_text().splitlines()
    lines[4] = "r3,a,b,c"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    config = RunConfig(input=source, output=out, base_url=fake_server.url, max_tokens=2,
                       template="{{ system }} {{ question }}", group_by_prefix="on",
                       on_bad_row="skip", quiet=True)
    assert fake_server.run(config).stats.ok == 8
    failed = [r for r in read_jsonl(out) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["id"] == "3"
    assert f"{source}:5" in failed[0]["error"]["message"]


def test_a_resumed_grouped_copy_sends_only_the_rest(fake_server: InProcessServer,
                                                    tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.parquet", interleaved(30))
    out = tmp_path / "out.jsonl"
    config = RunConfig(input=source, output=out, base_url=fake_server.url, max_tokens=2,
                       template="{{ system }} {{ question }}", group_by_prefix="on",
                       max_requests=12, quiet=True)
    assert fake_server.run(config).exit_code == 5
    fake_server.reset()
    result = fake_server.run(config.replace(max_requests=None))
    assert result.stats.already_done == 12 and result.stats.ok == 18
    assert len(fake_server.requests()) == 18
    assert sorted(r["index"] for r in read_jsonl(out)) == list(range(30))


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


def test_piped_rows_are_grouped_by_default(simulator: SimulatorProcess, tmp_path: Path
                                           ) -> None:
    data = "".join(json.dumps(row) + "\n" for row in interleaved(30)).encode()
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        vbatch_cmd("run", "-", "-o", str(out), "--base-url", simulator.url, "--max-tokens", "2",
                   "--concurrency", "1", "--input-format", "jsonl"),
        input=data, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert b"grouping rows by prompt prefix" in done.stderr
    sent = [system_of(body) for body in simulator.requests()]
    assert sum(1 for a, b in itertools.pairwise(sent) if a != b) == 2
    assert sorted(r["index"] for r in read_jsonl(out)) == list(range(30))


def test_python_rows_are_grouped_and_come_back_in_input_order(fake_server: InProcessServer
                                                               ) -> None:
    rows = [{"messages": row["messages"]} for row in interleaved(30)]
    out = vbatch.generate(rows, base_url=fake_server.url, transport=fake_server.transport,
                          max_tokens=2, concurrency=1, progress=False)
    sent = [system_of(body) for body in fake_server.requests()]
    assert sum(1 for a, b in itertools.pairwise(sent) if a != b) == 2
    assert [record["index"] for record in out] == list(range(30))


def test_auto_decides_from_an_even_sample_of_a_large_input(tmp_path: Path) -> None:
    blocks = [f"Task {k}. " + f"Worked example {k}. " * 60 for k in range(4)]
    pick = random.Random(3)
    data = [{"id": f"r{i}", "prompt": pick.choice(blocks) + f"question {i}"}
            for i in range(20_000)]
    source = write_jsonl(tmp_path / "in.jsonl", data)
    config = RunConfig(input=source, output=tmp_path / "out.jsonl", model="m",
                       endpoint="completions")
    builder = RequestBuilder(RequestSettings.of(config), "m")
    scan = scan_input(SourceSettings(source, None, source, "id", "fail", "auto"), builder)
    sample = scan.prefix_sample
    assert sample is not None and scan.prefix_order is None
    # 20,000 rows: thinned twice, one row in four kept.
    assert sample.mask == 3
    sharing = sample.sharing()
    assert sharing.pays and sharing.grouped > 0.9 and sharing.in_input_order < 0.4
