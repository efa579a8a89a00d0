"""`vbatch report`: the page and its PNGs from a real run's output (simulator), checked in a
real headless browser (Debian's chromium, installed by `make test`)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from vbatch.report.plots import PLOTS

from .conftest import SimulatorProcess, run_cli, write_jsonl

INLINE_PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def not_blank(png: bytes) -> bool:
    """Whether an image has something drawn: many colours, not all of it background."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    return colours is None or len(colours) > 20


@pytest.fixture
def finished_run(simulator: SimulatorProcess, tmp_path: Path) -> Path:
    """An output made in two runs (the first stopped by failures it then retries), with
    failures, long and short answers."""
    simulator.configure(latency=0.2, capacity=16, completion_tokens=24)
    rows = [{"id": i, "prompt": f"question {i} " + "word " * (i % 30)
             + ("SIM_REJECT" if i % 50 == 7 else "")} for i in range(300)]
    source = write_jsonl(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out.jsonl"
    for max_tokens in ("16", "16"):
        done = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                       "--max-tokens", max_tokens, "--retry-failed")
        assert done.returncode == 1, done.stderr
    return out


def test_the_report_has_every_plot_inline_and_as_png(finished_run: Path, tmp_path: Path) -> None:
    pngs = tmp_path / "pngs"
    done = run_cli("report", str(finished_run), "--png", str(pngs))
    assert done.returncode == 0, done.stderr
    page = finished_run.with_name("out.jsonl.report.html").read_text()
    inline = INLINE_PNG.findall(page)
    assert len(inline) == len(PLOTS) and all(not_blank(base64.b64decode(x)) for x in inline)
    assert sorted(p.name for p in pngs.iterdir()) == sorted(f"{p.name}.png" for p in PLOTS)
    assert "294 ok, 6 failed, 300 in all" in page and "2 (resumed 1 times)" in page
    assert "<script" not in page and "https://" not in page


def test_the_page_loads_in_a_headless_browser(finished_run: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs it with apt-get)")
    page = tmp_path / "report.html"
    assert run_cli("report", str(finished_run), "-o", str(page)).returncode == 0
    shot = tmp_path / "shot.png"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--enable-logging=stderr", "--v=0",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shown = subprocess.run([*flags, "--window-size=1100,1400", f"--screenshot={shot}",
                            page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), shown.stderr[-2000:]
    assert not_blank(shot.read_bytes())
    console = [line for line in shown.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.stdout.count("<img ") == len(PLOTS), dom.stderr[-2000:]
    assert dom.stdout.count("<figure") == len(PLOTS)


def test_a_file_that_is_not_a_vbatch_output_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "notes.jsonl"
    other.write_text('{"hello": 1}\n')
    done = run_cli("report", str(other))
    assert done.returncode == 2 and "notes.jsonl:1: not a vbatch record" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_prefix_cache_line_gives_each_servers_hit_rate() -> None:
    from types import SimpleNamespace

    from vbatch.report.page import _prefix_cache_line

    def server(url: str, queries: int, hits: int) -> dict[str, object]:
        return {"url": url, "prefix_queries": queries, "prefix_hits": hits}

    segment = SimpleNamespace(samples=[
        {"servers": [server("http://a/v1", 0, 0), server("http://b/v1", 100, 10)]},
        {"servers": [server("http://a/v1", 1000, 800), server("http://b/v1", 1100, 210)]}])
    line = _prefix_cache_line(SimpleNamespace(segments=[segment]))  # type: ignore[arg-type]
    assert line == ("50% of prompt tokens were cache hits (http://a/v1: 80%, http://b/v1: 20%)")
    alone = SimpleNamespace(samples=[{"servers": [server("http://a/v1", 0, 0)]},
                                     {"servers": [server("http://a/v1", 10, 5)]}])
    assert _prefix_cache_line(SimpleNamespace(segments=[alone])) == (  # type: ignore[arg-type]
        "50% of prompt tokens were cache hits")
