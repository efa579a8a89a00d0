"""The Python API against a real vLLM server on the CPU: one ``vbatch.Server`` for several
calls, and nothing left running after it."""

from __future__ import annotations

import os

import pandas as pd
import pytest

import vbatch

from .vllm_helpers import alive, api_servers_below

pytestmark = pytest.mark.vllm


def test_one_server_for_many_calls_then_gone() -> None:
    questions = ["What is the capital of France?", "Name a primary colour.",
                 "What is 2 + 2?", "Say hello in Spanish."]
    # Other tests' servers (the session's shared one) may be running below this process too.
    before = {p.pid for p in api_servers_below(os.getpid())}
    with vbatch.Server(max_model_len=512, quiet=True) as server:
        started = [p for p in api_servers_below(os.getpid()) if p.pid not in before]
        assert len(started) == 1
        records = vbatch.generate(questions[:2], base_url=server.url, max_tokens=12,
                                  progress=False)
        frame = vbatch.generate(pd.DataFrame({"question": questions[2:]}, index=[7, 9]),
                                prompt_field="question", base_url=server.url, max_tokens=12,
                                progress=False)
        assert [p for p in api_servers_below(os.getpid()) if p.pid not in before] == started
    assert [r["status"] for r in records] == ["ok", "ok"] and all(r["text"] for r in records)
    assert list(frame.index) == [7, 9] and list(frame["status"]) == ["ok", "ok"]
    assert frame["completion_tokens"].min() > 0
    assert not alive(started)
    assert not [p for p in api_servers_below(os.getpid()) if p.pid not in before]
