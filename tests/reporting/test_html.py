"""The page: self-contained, every text escaped, links resolving, plot data as the logs say (no browser)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser

from plmkit.reporting import build_report
from plmkit.reporting.html import MAX_POINTS, fmt, plot_data, render, script_json
from plmkit.reporting.sources import discover
from tests.reporting.fakes import INJECT, write_run

ENV = {"python": "3.11", "torch": "2.13.0", "plmkit": "0.1.0", "time_utc": "2026-12-06 00:00:00"}


class Tags(HTMLParser):
    """Every start tag with its attributes, the ids, and the text of each <script>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.ids, self.scripts, self.text, self._in = [], set(), [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "script":
            self._in = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self.scripts.append(self._in)
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self._in += data
        else:
            self.text.append(data)


def _parse(page: str) -> Tags:
    t = Tags()
    t.feed(page)
    t.close()
    return t


def test_page_is_escaped_and_self_contained(reproduce_out, tmp_path):
    (reproduce_out / "pretrain-vs-scratch" / "runs" / "arm-0" / "recipe.yaml").write_text(
        "note: </pre></details><script>window.__pwned=3</script>\n")
    page = render(discover([reproduce_out]), ENV)
    t = _parse(page)
    # nothing from the files became markup: exactly the two scripts of the page, no image, the text is there
    assert [tag for tag, _ in t.tags if tag in ("script", "img", "iframe", "object")] == ["script", "script"]
    text = "".join(t.text)
    assert INJECT in text and "</pre></details><script>window.__pwned=3</script>" in text
    # no resource is loaded from anywhere: no src, only in-page or data: links, no stylesheet links
    for tag, a in t.tags:
        assert "src" not in a, (tag, a)
        if "href" in a:
            assert a["href"].startswith("#") or a["href"].startswith("data:"), (tag, a)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    # the Content-Security-Policy allows exactly the page's own script (by its hash) and nothing else
    csp = next(a["content"] for tag, a in t.tags if a.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(t.scripts[1].encode()).digest()).decode()
    assert csp == f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    # the data block is valid JSON holding the plots
    data = json.loads(t.scripts[0])
    assert [p["metric"] for p in data["plots"]] == ["loss", "ppl", "lr", "grad_norm", "tokens_per_s"]


def test_every_link_has_its_anchor(reproduce_out, tmp_path):
    write_run(tmp_path / "solo")
    found = discover([reproduce_out, tmp_path / "solo"])
    page = render(found, ENV)
    t = _parse(page)
    links = [a["href"][1:] for tag, a in t.tags if tag == "a" and a.get("href", "").startswith("#")]
    assert links and not [x for x in links if x not in t.ids]
    # the claims table links each claim to its section and to its runs' sections; runs link back
    for c in found.claims:
        assert c.anchor in links and all(a in links for a in c.run_anchors)
    assert "run-solo" in t.ids and "claim-ngram-order" in links
    # legend links (made by the script) point at run sections too
    data = json.loads(t.scripts[0])
    assert {s["anchor"] for p in data["plots"] for s in p["series"]} <= t.ids
    assert {p["id"] for p in data["plots"]} <= t.ids


def test_claims_table_content(reproduce_out):
    page = render(discover([reproduce_out]), ENV)
    assert '<span class="verdict verdict-not-held">not held</span>' in page
    assert '<span class="verdict verdict-held">held</span>' in page
    assert "<td>962</td><td>701.3 \u00b1 2.1 (n=3)</td>" in page  # reference vs ours
    assert "paired difference &gt; 2 standard errors over 3 seeds" in page
    assert "<td>699, 701.5, 703.4</td>" in page  # per-seed values
    assert "<td>git_revision</td><td>abc1234</td>" in page  # the claim's environment
    assert "2 claim(s): 1 held, 1 not held, 0 inconclusive; 3 run(s)" in page


def test_plot_data_follows_the_logs(tmp_path):
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b", steps=20, scale=2.0)
    with open(b / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "loss": NaN}\n')
    plots, per_run = plot_data(discover([a, b]))
    by = {p["metric"]: p for p in plots}
    assert "targets" not in by  # constant in every log: tables only
    names = [s["name"] for s in by["loss"]["series"]]
    assert names == ["a", "a (eval)", "b", "b (eval)"]
    a_train = by["loss"]["series"][0]["points"]
    ref = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert a_train == [[r["step"], float(f"{r['loss']:.6g}")] for r in ref]  # 6 significant digits
    assert by["loss"]["series"][2]["points"][-1] == [25, None]  # a gap, drawn as one
    assert [s["kind"] for s in by["ppl"]["series"]] == ["eval", "eval"]
    assert per_run["run-a"] == ["loss", "ppl", "lr", "grad_norm", "tokens_per_s"]


def test_long_logs_are_thinned_keeping_the_last_point(tmp_path):
    d = tmp_path / "long"
    d.mkdir()
    n = 3 * MAX_POINTS + 7
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in range(1, n + 1)))
    (plot,) = plot_data(discover([d]))[0]
    (s,) = plot["series"]
    assert s["stride"] == 4 and len(s["points"]) <= MAX_POINTS + 1 and s["points"][-1] == [n, float(f"{1 / n:.6g}")]
    assert s["points"][:2] == [[1, 1.0], [5, 0.2]]


def test_quickstart_style_logs_split_by_model(tmp_path):
    d = write_run(tmp_path / "qs", model="mlm", evals=False)
    write_run(d, model="clm", evals=False, scale=1.5)
    plots, _ = plot_data(discover([d]))
    assert [s["name"] for s in plots[0]["series"]] == ["qs \u00b7 mlm", "qs \u00b7 clm"]


def test_script_json_cannot_close_its_element():
    value = {"t": "</script><!-- & \u2028 >"}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


def test_fmt():
    assert [fmt(3), fmt(0.000123456), fmt(1234567.0), fmt(None), fmt(float("nan")), fmt(True), fmt("a<b")] == \
           ["3", "0.0001235", "1.235e+06", "\u2014", "\u2014", "true", "a<b"]


def test_build_report_writes_atomically_and_replaces(reproduce_out, tmp_path):
    out = tmp_path / "sub" / "report.html"
    build_report([reproduce_out], out)
    first = out.read_text()
    build_report([reproduce_out / "ngram-order"], out)
    assert out.read_text() != first and "pretrain-vs-scratch" not in out.read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]


def test_plain_number_figures_match_reference_by_prefix_and_extra_keys_are_listed(tmp_path):
    # the shape plm reproduce ngram-order writes: plain numbers, "1-gram KN" beside the reference's "1-gram"
    d = tmp_path / "ngram-order"
    d.mkdir()
    (d / "claim.json").write_text(json.dumps({
        "id": "ngram-order", "claim": "c", "verdict": "inconclusive", "rule": "r",
        "reference": {"source": "seed table", "figures": {"1-gram": 962, "2-gram": 170, "12-gram": 1}},
        "ours": {"1-gram KN": 701.25, "1-gram add-k": 702.0, "2-gram KN": None, "3-gram KN": 300.5},
        "effect": -1.5, "se": None, "params": {"k_grid": [1.0, 0.1]}, "table": None, "runs": [],
        "details": {"train_sentences": 10}, "environment": {}}))
    page = render(discover([d]), ENV)
    for row in ["<td>1-gram KN</td><td>962</td><td>701.2</td>", "<td>1-gram add-k</td><td>962</td><td>702</td>",
                "<td>2-gram KN</td><td>170</td><td>\u2014</td>", "<td>3-gram KN</td><td>\u2014</td><td>300.5</td>",
                "<td>12-gram</td><td>1</td><td>\u2014</td>"]:
        assert row in page, row
    for kv in ['<td>effect</td><td class="num">-1.5</td>', "<td>se</td><td>\u2014</td>",
               "<td>params.k_grid</td><td>[1.0, 0.1]</td>", '<td>details.train_sentences</td><td class="num">10</td>']:
        assert kv in page, kv


def test_folders_without_runs_are_named_on_the_page(tmp_path):
    write_run(tmp_path / "a")
    (tmp_path / "b<i>").mkdir()
    page = render(discover([tmp_path]), ENV)
    assert f'<p class="note">No claim.json or metrics.jsonl in or below: {tmp_path}/b&lt;i&gt;</p>' in page


def test_ours_mean_sd_n():
    from plmkit.reporting.html import _ours

    assert _ours({"mean": 0.87804, "sd": 0.009076, "n": 3}) == "0.878 \u00b1 0.0091 (n=3)"
    assert _ours({"mean": 701.25, "sd": 2, "n": 3}) == "701.2 \u00b1 2 (n=3)"
    assert _ours({"mean": 5.0}) == "5" and _ours(3.5) == "3.5" and _ours(None) == "\u2014"
