"""The ``vbatch`` command line: a thin layer that parses options and calls the library.

Each command imports the library's machinery when it runs, so ``vbatch --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from vbatch._version import __version__
from vbatch.arena import use_one_arena
from vbatch.cli_options import managed_server_options, row_options, run_options
from vbatch.config import RunConfig
from vbatch.errors import EXIT_INTERRUPTED, ConfigError, VbatchError
from vbatch.testing.command import simulate


@contextlib.contextmanager
def _exit_on_error() -> Iterator[None]:
    """Print a vbatch error and exit with its ``exit_code`` (see :mod:`vbatch.errors`)."""
    try:
        yield
    except VbatchError as exc:
        click.echo(f"vbatch: error: {exc}", err=True)
        sys.exit(exc.exit_code)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vbatch")
def main() -> None:
    """Run a whole dataset through an LLM served by vLLM (or any OpenAI-compatible server)."""
    use_one_arena()


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output: one record per input row, JSON lines (.jsonl) or Parquet (.parquet, "
              "written at the end from OUTPUT.journal.jsonl). Rerunning resumes it.")
@run_options
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED)
def run(input_path: Path, output: Path, **options: Any) -> None:
    """Send every row of INPUT and write one record per row to -o.

    INPUT: JSONL, CSV, Parquet, an Arrow IPC file, a directory saved by datasets'
    save_to_disk, or - for stdin.

    Without --base-url, vbatch starts a vLLM server for the run (the embedded default model
    unless --model names a model directory or hub name) and stops it at the end; arguments
    after -- go to that server.
    """
    _run(input_path, output, options)


def _run(input_path: Path, output: Path, options: dict[str, Any]) -> None:
    """Run the job of ``run`` and ``run-batch`` and exit with its status."""
    options["retry_base_delay"] = options.pop("retry_delay")
    options["base_url"] = tuple(options["base_url"]) or None
    options["ray"] = options["ray_address"] is not None
    options["ray_address"] = options["ray_address"] or None
    for name in ("stop", "keep", "server_args"):
        options[name] = tuple(options[name])
    shape = {name: options.pop(name)
             for name in ("json_schema", "json_object", "regex", "choice", "grammar")}
    # Until sending starts (the run then handles both signals itself), SIGTERM stops the
    # check pass as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    from vbatch.runner import run as run_job
    from vbatch.structured.parse import spec_of_options

    try:
        with _exit_on_error():
            options["response_format"] = spec_of_options(**shape)
            result = run_job(RunConfig(input=input_path, output=output, **options))
    except KeyboardInterrupt:
        click.echo("vbatch: interrupted before sending; nothing was lost.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(result.exit_code)


@main.command("run-batch", context_settings={"ignore_unknown_options": True})
@click.option("-i", "--input-file", "input_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="OpenAI Batch file: one {custom_id, method, url, body} per line (- for stdin).")
@click.option("-o", "--output-file", "output", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Output: one OpenAI Batch output line per request, written at the end from "
              "OUTPUT.journal.jsonl. Rerunning resumes it.")
@click.option("--output-tmp-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Accepted for vllm run-batch's sake; vbatch journals beside the output.")
@run_options
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED)
def run_batch(input_path: Path, output: Path, output_tmp_dir: Path | None,
              **options: Any) -> None:
    """The drop-in for `vllm run-batch`: every request of an OpenAI Batch file, sent at once
    under a bound, resumable, one output line per request.

    Takes vllm run-batch's own flags (-i, -o, --model, and every engine flag, passed to the
    vLLM server vbatch starts), and every option of `vbatch run` (--base-url to use running
    servers, --concurrency, --max-retries, ...). Lines whose request fails are error lines;
    the exit status is 0 when every line has an output line, as with vllm run-batch.
    """
    options["input_format"] = "openai-batch"
    _run(input_path, output, options)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True,
              help="Port to listen on (0 picks a free one).")
@click.option("--api-key", envvar=["VBATCH_API_KEY", "VLLM_API_KEY"],
              help="Require this API key (env VBATCH_API_KEY or VLLM_API_KEY; prefer them: "
              "a command line is visible to every user in ps); none by default.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Server log file (default: under ~/.cache/vbatch/logs).")
@click.option("--pooling", is_flag=True,
              help="Serve a pooling model (embeddings, score, rerank, classify) with vLLM's "
              "pooling runner; without MODEL, the embedded all-MiniLM-L6-v2.")
@managed_server_options
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED)
def serve(model: str | None, port: int, log_path: Path | None, pooling: bool,
          **options: Any) -> None:
    """Start vLLM's OpenAI-compatible server for MODEL and keep it in the foreground.

    MODEL is a model directory or hub name; without it, the embedded default model (with
    --pooling, the embedded pooling model).
    Arguments after -- go to vllm serve. Ctrl-C or SIGTERM stops the server.
    """
    extra = tuple(options.pop("server_args"))
    if model is not None and model.startswith("-"):
        # `vbatch serve -- --flag`: with no MODEL, click hands the first argument after -- to it.
        model, extra = None, (model, *extra)
    options["extra_args"] = extra
    from vbatch.servers.serve import serve_foreground

    with _exit_on_error():
        code = serve_foreground(model, port=port, log_path=log_path, pooling=pooling, **options)
    sys.exit(code)


@main.command()
@click.argument("output", metavar="OUTPUT", type=click.Path(exists=True, dir_okay=False,
                                                           path_type=Path))
@click.option("-o", "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML page to write (default: OUTPUT.report.html).")
@click.option("--png", "png_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write each plot as a PNG file in this folder.")
def report(output: Path, report_path: Path | None, png_dir: Path | None) -> None:
    """Build one self-contained HTML page of plots from a run's OUTPUT (the -o of vbatch run),
    its manifest and its timeline (OUTPUT.timeline.jsonl)."""
    with _exit_on_error():
        try:
            from vbatch.report import build_report
        except ImportError:
            raise ConfigError("vbatch report needs matplotlib: pip install 'vbatch[report]'"
                              ) from None
        page, pngs = build_report(output, report_path, png_dir)
    click.echo(f"vbatch: wrote {page}" + (f" and {len(pngs)} PNG files in {png_dir}"
                                          if png_dir is not None else ""))


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--model", help="Model directory or hub name (default: the embedded model).")
@click.option("--max-tokens", type=int, help="max_tokens the rows will ask for.")
@click.option("--max-model-len", type=int,
              help="Count the rows that do not fit this context, and list their ids.")
@row_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(input_path: Path, as_json: bool, **options: Any) -> None:
    """Count INPUT's prompt tokens exactly and print the --max-model-len that fits it."""
    from vbatch.prepare.plan import plan_input
    from vbatch.servers.default_model import resolve_model

    with _exit_on_error():
        model_path, _ = resolve_model(options.pop("model"))
        token_plan = plan_input(input_path, model_path=model_path, **options)
    if as_json:
        click.echo(orjson.dumps(token_plan.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(token_plan.text())


@main.group()
def cache() -> None:
    """The response cache of --cache-dir: what it holds, and emptying it."""


_CACHE_DIR = click.option("--cache-dir", envvar="VBATCH_CACHE_DIR", required=True,
                          type=click.Path(file_okay=False, path_type=Path),
                          help="The cache's directory (env VBATCH_CACHE_DIR).")


@cache.command("info")
@_CACHE_DIR
def cache_info(cache_dir: Path) -> None:
    """How many answers the cache holds, and their size."""
    from vbatch.cache.store import ResponseCache

    with _exit_on_error():
        store = ResponseCache(cache_dir, 1 << 62)
        info = store.info()
        store.close()
    click.echo(f"{info.path}: {info.answers} answers, {info.size_bytes / 1e6:.1f} MB")


@cache.command("clear")
@_CACHE_DIR
def cache_clear(cache_dir: Path) -> None:
    """Remove every answer from the cache."""
    from vbatch.cache.store import ResponseCache

    with _exit_on_error():
        store = ResponseCache(cache_dir, 1 << 62)
        removed = store.clear()
        store.close()
    click.echo(f"vbatch: removed {removed} answers from {store.path}")


main.add_command(simulate)
