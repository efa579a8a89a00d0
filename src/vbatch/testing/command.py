"""``vbatch simulate`` (also ``python -m vbatch.testing.command``): the simulator process."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import click

from vbatch.testing.behaviour import SimConfig

__all__ = ["simulate"]

# The defaults of every option are the simulator's own.
_DEFAULT = SimConfig()


@click.command()
@click.option("--port", type=int, default=8000, show_default=True,
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--model", default=_DEFAULT.model, show_default=True, help="Model name it serves.")
@click.option("--max-model-len", type=int, default=_DEFAULT.max_model_len, show_default=True,
              help="Context length it reports and enforces (tokens are words).")
@click.option("--latency", type=float, default=_DEFAULT.latency, show_default=True,
              help="Seconds every answer takes.")
@click.option("--token-latency", type=float, default=_DEFAULT.token_latency, show_default=True,
              help="Extra seconds per generated token.")
@click.option("--capacity", type=int, default=_DEFAULT.capacity, show_default=True,
              help="Requests served at once; more wait (0: no limit).")
@click.option("--completion-tokens", type=int, default=_DEFAULT.completion_tokens,
              show_default=True,
              help="Tokens generated per answer (capped by max_tokens).")
@click.option("--fail-first", type=int, default=_DEFAULT.fail_first, show_default=True,
              help="Answer the first N requests with --fail-status.")
@click.option("--fail-status", type=int, default=_DEFAULT.fail_status, show_default=True,
              help="Status of simulated failures.")
@click.option("--error-rate", type=float, default=_DEFAULT.error_rate, show_default=True,
              help="Probability of answering --fail-status.")
@click.option("--retry-after", type=float, help="Retry-After seconds sent with 429/503.")
@click.option("--drop-rate", type=float, default=_DEFAULT.drop_rate, show_default=True,
              help="Probability of dropping the connection without an answer.")
@click.option("--slow-rate", type=float, default=_DEFAULT.slow_rate, show_default=True,
              help="Probability of an answer taking --slow-latency more.")
@click.option("--slow-latency", type=float, default=_DEFAULT.slow_latency, show_default=True,
              help="Extra seconds of a slow answer.")
@click.option("--reject-marker", default=_DEFAULT.reject_marker, show_default=True,
              help="Prompts containing this text are answered 400.")
@click.option("--api-key", help="Require this bearer token.")
@click.option("--seed", type=int, default=_DEFAULT.seed, show_default=True,
              help="Seed of the simulated faults.")
def simulate(port: int, **options: Any) -> None:
    """Serve a simulated vLLM OpenAI-compatible server on loopback (for tests and dry runs)."""
    from vbatch.testing.simulator import serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(SimConfig(**options), port=port))


if __name__ == "__main__":
    simulate(prog_name="vbatch simulate")
