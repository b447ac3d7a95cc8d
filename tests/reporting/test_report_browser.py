"""The report in a real headless Chromium (driven by Playwright): it loads with no console or page errors and
no network request, every plot's SVG has drawn paths, the log-scale toggle changes the y axis, every in-page
link resolves to an element, and a PNG screenshot is written (its path is printed).

Skips with the reason when Playwright or a Chromium binary is missing. The browser is the system one:
``$PLMKIT_CHROMIUM``, else ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``), else
``chromium`` / ``chromium-browser`` / ``google-chrome`` on the PATH.

Also a script, to check a report made elsewhere and keep its screenshot::

    python tests/report/test_report_browser.py report.html shot.png [--width 1280] [--height 0 (full page)]
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    for cand in (os.environ.get("PLMKIT_CHROMIUM"), "/usr/bin/chromium"):
        if cand and os.access(cand, os.X_OK):
            return cand
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def check_report(html_path: Path, png_path: Path, width: int = 1280, height: int = 0) -> dict:
    """Load the page, exercise it, and return what was seen (asserting as it goes)."""
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height or 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
                    else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(html_path).resolve().as_uri())
            page.wait_for_load_state("load")
            seen = page.evaluate("""() => {
                const plots = [...document.querySelectorAll('figure.plot')].map(f => ({
                    id: f.id,
                    paths: [...f.querySelectorAll('svg path.series')].filter(p => /[ML]/.test(p.getAttribute('d') || '')
                        && p.getTotalLength() > 0).length,
                    legend: f.querySelectorAll('ul.legend li').length,
                    scale: f.querySelector('svg').getAttribute('data-scale'),
                    yticks: [...f.querySelectorAll('svg text.ytick')].map(t => t.textContent)}));
                const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
                const broken = links.filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1)));
                return {plots, links: links.length, broken, drawn: document.body.dataset.plotsDrawn,
                        pwned: window.__pwned === undefined ? null : window.__pwned,
                        injected: document.querySelectorAll('img, iframe, object, embed').length};
            }""")
            assert not errors, errors
            assert seen["drawn"] == str(len(seen["plots"])), seen
            for plot in seen["plots"]:
                assert plot["paths"] >= 1 and plot["legend"] >= 1, plot
                assert plot["scale"] == "linear" and len(plot["yticks"]) >= 2, plot
            assert seen["links"] > 0 and seen["broken"] == [], seen["broken"]
            assert seen["pwned"] is None and seen["injected"] == 0
            if seen["plots"]:
                _exercise_plots(page, seen)
            # a link jumps to its section
            first_claim = page.locator("table.claims a").first
            if first_claim.count():
                target = first_claim.get_attribute("href")
                first_claim.click()
                assert page.evaluate("location.hash") == target
                page.evaluate("window.scrollTo(0, 0); history.replaceState(null, '', location.pathname)")
            page.mouse.move(0, 0)
            png_path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png_path), full_page=not height)
        finally:
            browser.close()
    assert not errors, errors
    assert [u for u in requests if not u.startswith("file:")] == [], requests  # nothing from the network
    seen["screenshot"] = str(png_path)
    return seen


def _exercise_plots(page, seen: dict) -> None:
    """The log toggle of the first plot redraws its y axis on a log scale and back; the global toggle sets
    every plot; a legend swatch hides its series; the pointer over a plot reads the values."""
    fig = page.locator("figure.plot").first
    before = seen["plots"][0]["yticks"]
    n_paths = fig.locator("svg path.series").count()
    fig.locator("input[type=checkbox]").check()
    after = fig.locator("svg text.ytick").all_text_contents()
    assert fig.locator("svg").get_attribute("data-scale") == "log"
    assert after != before and len(after) >= 2, (before, after)
    assert fig.locator("svg path.series").count() == n_paths  # the loss is positive: every series still drawn
    fig.locator("input[type=checkbox]").uncheck()
    assert fig.locator("svg text.ytick").all_text_contents() == before
    # the global toggle sets every plot; a legend swatch hides its series
    page.locator("#log-all").check()
    assert page.locator("figure.plot svg[data-scale=log]").count() == len(seen["plots"])
    page.locator("#log-all").uncheck()
    n = fig.locator("svg path.series").count()
    fig.locator("ul.legend button.swatch").first.click()
    assert fig.locator("svg path.series").count() == n - 1
    fig.locator("ul.legend button.swatch").first.click()
    # the pointer over a plot shows the values there
    box = fig.locator("svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    assert "@" in fig.locator(".readout").text_content()


def _require_browser():
    import pytest

    pytest.importorskip("playwright", reason="Playwright is not installed (pip install playwright; the test "
                                             "extra has it)")
    if find_chromium() is None:
        pytest.skip("no Chromium found (/usr/bin/chromium, $PLMKIT_CHROMIUM or chromium on the PATH); "
                    "on Debian/Ubuntu: apt-get install -y chromium")


def test_report_in_headless_chromium(reproduce_out, tmp_path):
    _require_browser()
    from plmkit.reporting import build_report
    from tests.reporting.fakes import write_run

    write_run(tmp_path / "runs" / "solo", steps=60)
    # edge cases: one logged step; a gap (null); a metric crossing zero (its log scale drops the values <= 0)
    (tmp_path / "runs" / "single").mkdir()
    (tmp_path / "runs" / "single" / "metrics.jsonl").write_text('{"step": 3, "loss": 4.0}\n')
    (tmp_path / "runs" / "edge").mkdir()
    (tmp_path / "runs" / "edge" / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 5.0, "delta": -0.5}\n{"step": 2, "loss": null, "delta": 0.5}\n'
        '{"step": 3, "loss": 4.5, "delta": 0.25}\n')
    out = tmp_path / "report.html"
    build_report([reproduce_out, tmp_path / "runs"], out)
    seen = check_report(out, tmp_path / "report.png")
    assert [p["id"] for p in seen["plots"]] == ["plot-loss", "plot-ppl", "plot-lr", "plot-grad_norm",
                                                "plot-tokens_per_s", "plot-delta"]
    assert Path(seen["screenshot"]).stat().st_size > 10_000
    print(f"report screenshot: {seen['screenshot']}")


def test_skips_with_the_reason_without_a_chromium(monkeypatch):
    import pytest

    pytest.importorskip("playwright", reason="Playwright is not installed")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert find_chromium() is None
    with pytest.raises(pytest.skip.Exception, match="no Chromium found .* apt-get install -y chromium"):
        _require_browser()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html")
    ap.add_argument("png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=0, help="viewport height; 0: the full page")
    a = ap.parse_args()
    if find_chromium() is None:
        sys.exit("no Chromium found; on Debian/Ubuntu: apt-get install -y chromium")
    res = check_report(Path(a.html), Path(a.png), a.width, a.height)
    print(f"{len(res['plots'])} plots drawn, {res['links']} links resolved; screenshot: {res['screenshot']}")
