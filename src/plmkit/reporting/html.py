"""``render(found, environment) -> str``: one self-contained HTML page of claims and runs.

The page needs no server and no network: the stylesheet and the plotting script (``plmkit/assets/report.css``
and ``report.js``) are inlined, the curves are inlined as JSON (``<script type="application/json">``) and drawn
as SVG by the script, and a Content-Security-Policy allows nothing to load (the one script is allowed by its
hash, so no other script can run even if a value escaped its escaping). Every text from the files read is
HTML-escaped; the JSON block escapes ``<``, ``>`` and ``&`` so that no file content can close the block.

Sections: the claims table (reference vs ours, verdict, rule; each row links to the claim's section and its
runs), the curves (one plot per metric, every run overlaid; log-scale toggle, legend linking to the run), one
section per claim (figures, per-arm table, runs, environment) and per run (summary, evaluations, recipe, the
claims that use it), and the environment the report was made in.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from pathlib import Path
from typing import Any

from plmkit.reporting.sources import Claim, Found, Run

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MAX_POINTS = 1000  # per series in a plot; longer logs are thinned (every k-th point, the last one kept)
DIGITS = 6  # significant digits of the plotted values (the tables show them in full)
NOT_PLOTTED = {"step", "elapsed_s", "epoch"}
_FIRST = ("loss", "ppl", "acc", "lr", "grad_norm", "tokens_per_s")


def esc(value: Any) -> str:
    """Text for HTML (element content and quoted attribute values)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A table cell's text: ints as they are, floats to 4 significant digits, None as a dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "\u2014"
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>``, ``<!--`` or ``&`` can appear in it."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e") \
               .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _table(columns: list, rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _td(v: Any) -> str:
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    return f'<td class="num">{esc(fmt(v))}</td>' if num else f"<td>{esc(fmt(v))}</td>"


def _kv(d: dict, cls: str = "kv") -> str:
    return _table(["key", "value"], [[k, v] for k, v in d.items()], cls)


def _verdict(v: str) -> str:
    return f'<span class="verdict verdict-{esc(v.replace(" ", "-"))}">{esc(v)}</span>'


def _ours(fig: Any) -> str:
    if fig is None or isinstance(fig, (int, float)):
        return fmt(fig)
    mean, sd, n = fig.get("mean"), fig.get("sd"), fig.get("n")
    text = fmt(mean)
    if sd is not None:
        text += f" \u00b1 {sd:.2g}" if isinstance(sd, float) else f" \u00b1 {fmt(sd)}"
    if n is not None:
        text += f" (n={fmt(n)})"
    return text


def _reference(claim: Claim) -> tuple[str, dict]:
    ref = claim.data.get("reference")
    if isinstance(ref, dict):
        return str(ref.get("source", "")), ref.get("figures") or {}
    return ("" if ref is None else str(ref)), {}


def _matching_reference(name: str, ref_figs: dict) -> str | None:
    """The reference figure for our figure ``name``: the same name, else the longest reference name that
    ``name`` starts with as a whole word (``1-gram`` for ``1-gram KN``), else None."""
    if name in ref_figs:
        return name
    best = None
    for ref in ref_figs:
        if name.startswith(ref) and not name[len(ref)].isalnum() and (best is None or len(ref) > len(best)):
            best = ref
    return best


def _figure_rows(claim: Claim) -> list[list]:
    """(figure, reference figure, ours) rows: ours in their order, each beside its reference figure; then the
    reference figures that none of ours matched."""
    _, ref_figs = _reference(claim)
    ours = claim.data.get("ours") or {}
    rows, used = [], set()
    for n, fig in ours.items():
        ref = _matching_reference(n, ref_figs)
        used.add(ref)
        rows.append([n, "\u2014" if ref is None else fmt(ref_figs[ref]), _ours(fig)])
    rows += [[n, fmt(v), "\u2014"] for n, v in ref_figs.items() if n not in used]
    return rows


def _figures_cell(claim: Claim) -> str:
    rows = _figure_rows(claim)
    if not rows:
        return '<span class="muted">no figures</span>'
    body = "".join(f'<tr><th>{esc(n)}</th><td class="ref">{esc(r)}</td><td>{esc(o)}</td></tr>' for n, r, o in rows)
    return f'<table class="figs"><thead><tr><th></th><th>reference</th><th>ours</th></tr></thead><tbody>{body}</tbody></table>'


def _runs_links(anchors: list[str], labels: dict[str, str]) -> str:
    if not anchors:
        return '<span class="muted">none listed</span>'
    return ", ".join(f'<a href="#{esc(a)}">{esc(labels[a])}</a>' for a in anchors)


def _claims_table(found: Found, labels: dict[str, str]) -> str:
    if not found.claims:
        return '<p class="muted">No claim directories (claim.json) were given.</p>'
    rows = []
    for c in found.claims:
        source, _ = _reference(c)
        rows.append(
            f'<tr id="row-{esc(c.anchor)}"><td><a href="#{esc(c.anchor)}">{esc(c.data["id"])}</a>'
            f'<div class="claimtext">{esc(c.data["claim"])}</div></td>'
            f"<td>{_figures_cell(c)}<div class=\"muted\">{esc(source)}</div></td>"
            f"<td>{_verdict(c.data['verdict'])}</td><td>{esc(c.data.get('rule', ''))}</td>"
            f"<td>{_runs_links(c.run_anchors, labels)}</td></tr>")
    head = "<tr><th>claim</th><th>reference vs ours</th><th>verdict</th><th>rule</th><th>runs</th></tr>"
    return f'<table class="claims"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _claim_section(c: Claim, labels: dict[str, str]) -> str:
    d = c.data
    source, _ = _reference(c)
    parts = [f'<section class="claim" id="{esc(c.anchor)}"><h3>{esc(d["id"])} {_verdict(d["verdict"])}</h3>',
             f'<p class="claimtext">{esc(d["claim"])}</p>',
             f'<p><b>Rule:</b> {esc(d.get("rule", "not given"))}</p>']
    if source:
        parts.append(f"<p><b>Reference:</b> {esc(source)}</p>")
    facts = {k: v for k, v in _flat_other(d).items()}
    facts["directory"] = str(c.path)
    parts.append(_kv(facts))
    rows = _figure_rows(c)
    if rows:
        ours = d.get("ours") or {}
        full = [[n, r, o, ", ".join(fmt(v) for v in (ours.get(n) or {}).get("values", []))
                 if isinstance(ours.get(n), dict) else ""] for n, r, o in rows]
        parts.append("<h4>Figures</h4>" + _table(["figure", "reference", "ours", "values (per seed)"], full))
    if d.get("table"):
        parts.append("<h4>Per arm</h4>" + _table(d["table"]["columns"], d["table"]["rows"]))
    parts.append(f"<p><b>Runs:</b> {_runs_links(c.run_anchors, labels)}</p>")
    if d.get("environment"):
        parts.append("<h4>Environment</h4>" + _kv(d["environment"]))
    parts.append('<p><a href="#claims">back to the claims table</a></p></section>')
    return "".join(parts)


# claim.json keys shown in their own place; every other key is listed in the claim's facts table.
_CLAIM_SHOWN = {"id", "claim", "reference", "ours", "verdict", "rule", "table", "runs", "environment"}


def _flat_other(d: dict) -> dict:
    out: dict = {}

    def walk(v: Any, key: str) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(x, f"{key}.{k}")
        else:
            out[key] = v

    for k, v in d.items():
        if k not in _CLAIM_SHOWN:
            walk(v, k)
    return out


def _eval_table(run: Run) -> str:
    cols = ["step"] + sorted({k for r in run.evals for k in r if k != "step"})
    return _table(cols, [[r.get(k) for k in cols] for r in run.evals], "evals")


def _run_section(r: Run, labels: dict[str, str], metrics: dict[str, list[str]]) -> str:
    parts = [f'<section class="run" id="{esc(r.anchor)}"><h3>{esc(r.label)}</h3>',
             f'<p class="muted">{esc(r.path)}</p>']
    if r.claims:
        parts.append(f"<p><b>Claims:</b> {_runs_links(r.claims, labels)}</p>")
    plots = metrics.get(r.anchor, [])
    if plots:
        parts.append("<p><b>Curves:</b> " + ", ".join(
            f'<a href="#{esc(_plot_id(m))}">{esc(m)}</a>' for m in plots) + "</p>")
    for n in r.notes:
        parts.append(f'<p class="note">{esc(n)}</p>')
    last = r.metrics[-1] if r.metrics else {}
    facts = {"logged steps": len(r.metrics), "last step": last.get("step"), "evaluations": len(r.evals)}
    if "loss" in last:
        facts["last training loss"] = last["loss"]
    eval_losses = [e["loss"] for e in r.evals if isinstance(e.get("loss"), (int, float))]
    if eval_losses:
        facts["best held-out loss"] = min(eval_losses)
    parts.append(_kv(facts))
    if r.evals:
        parts.append("<h4>Evaluations (eval.jsonl)</h4>" + _eval_table(r))
    if r.summary:
        parts.append(f"<h4>Summary ({esc(r.summary[0])})</h4>" + _kv(r.summary[1]))
    if r.recipe:
        parts.append(f"<details><summary>Configuration ({esc(r.recipe[0])})</summary>"
                     f"<pre>{esc(r.recipe[1])}</pre></details>")
    else:
        parts.append('<p class="muted">No recipe file (recipe.yaml / config.yaml / task.json) in this run.</p>')
    parts.append('<p><a href="#curves">back to the curves</a></p></section>')
    return "".join(parts)


def _plot_id(metric: str) -> str:
    return "plot-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in metric)


def _metric_order(m: str) -> tuple:
    for i, key in enumerate(_FIRST):
        if m == key:
            return (0, i, m)
    for i, key in enumerate(_FIRST):
        if key in m:
            return (1, i, m)
    return (2, 0, m)


def _round(v: float | None) -> float | None:
    return v if v is None or isinstance(v, int) else float(f"{v:.{DIGITS}g}")


def _series(run: Run, records: list[dict], kind: str) -> dict[str, list[dict]]:
    """metric -> series of one run's log (split by a string ``model`` field, as plm quickstart writes)."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        tag = rec.get("model") if isinstance(rec.get("model"), str) else ""
        groups.setdefault(tag, []).append(rec)
    out: dict[str, list[dict]] = {}
    for tag, recs in groups.items():
        keys = [k for k in dict.fromkeys(k for r in recs for k in r) if k not in NOT_PLOTTED]
        for k in keys:
            pts = [[r["step"], _round(r[k])] for r in recs if k in r and
                   (r[k] is None or (isinstance(r[k], (int, float)) and not isinstance(r[k], bool)))]
            if not any(p[1] is not None for p in pts):
                continue
            stride = max(1, math.ceil(len(pts) / MAX_POINTS))
            thinned = pts[::stride]
            if thinned[-1] is not pts[-1]:
                thinned.append(pts[-1])
            name = run.label + (f" \u00b7 {tag}" if tag else "") + (" (eval)" if kind == "eval" else "")
            out.setdefault(k, []).append({"name": name, "anchor": run.anchor, "kind": kind, "points": thinned,
                                          "stride": stride})
    return out


def plot_data(found: Found) -> tuple[list[dict], dict[str, list[str]]]:
    """The plots (one per metric; every run's series on it) and, per run anchor, the metrics it appears in."""
    by_metric: dict[str, list[dict]] = {}
    for i, run in enumerate(found.runs):
        for kind, recs in (("train", run.metrics), ("eval", run.evals)):
            for m, series in _series(run, recs, kind).items():
                for s in series:
                    s["color"] = i
                by_metric.setdefault(m, []).extend(series)
    plots, per_run = [], {}
    for m in sorted(by_metric, key=_metric_order):
        values = {p[1] for s in by_metric[m] for p in s["points"] if p[1] is not None}
        if len(values) < 2:  # a constant (a count, a fixed setting): it is in the tables, not worth a plot
            continue
        plots.append({"metric": m, "id": _plot_id(m), "series": by_metric[m]})
        for s in by_metric[m]:
            per_run.setdefault(s["anchor"], [])
            if m not in per_run[s["anchor"]]:
                per_run[s["anchor"]].append(m)
    return plots, per_run


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def render(found: Found, environment: dict, title: str = "plmkit report") -> str:
    """The whole page as one string."""
    labels = {c.anchor: c.data["id"] for c in found.claims}
    labels.update({r.anchor: r.label for r in found.runs})
    plots, per_run = plot_data(found)
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    plot_divs = "".join(
        f'<figure class="plot" id="{esc(p["id"])}" data-metric="{esc(p["metric"])}"></figure>' for p in plots)
    counts = {"held": 0, "not held": 0, "inconclusive": 0}
    for c in found.claims:
        counts[c.data["verdict"]] += 1
    summary = (f"{len(found.claims)} claim(s): " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "; "
               if found.claims else "") + f"{len(found.runs)} run(s)"
    nav = ['<a href="#claims">Claims</a>', '<a href="#curves">Curves</a>']
    if found.claims:
        nav.append('<a href="#claim-details">Claim details</a>')
    if found.runs:
        nav.append('<a href="#runs">Runs</a>')
    nav.append('<a href="#environment">Environment</a>')
    body = [
        f"<header><h1>{esc(title)}</h1><p>{esc(summary)}; generated {esc(environment.get('time_utc', ''))} UTC "
        f"by plmkit {esc(environment.get('plmkit', ''))}</p>"
        + (f'<p class="note">No claim.json or metrics.jsonl in or below: {esc(", ".join(str(p) for p in found.empty))}'
           "</p>" if found.empty else "")
        + f"<nav>{' | '.join(nav)}</nav></header>",
        f'<section id="claims"><h2>Claims</h2>{_claims_table(found, labels)}</section>',
        '<section id="curves"><h2>Curves</h2>',
        ('<p class="controls"><label><input type="checkbox" id="log-all"> log scale on every plot</label> '
         '<span class="muted">(each plot has its own toggle; click a legend swatch to hide a series; '
         'the pointer over a plot reads the values)</span></p>' if plots else
         '<p class="muted">No run with logged metrics was given.</p>'),
        ('<noscript><p class="note">The plots are drawn by the page\'s script: allow JavaScript for this file '
         "to see them (the tables below need none).</p></noscript>" if plots else ""),
        f'<div class="plots">{plot_divs}</div></section>',
    ]
    if found.claims:
        body.append('<section id="claim-details"><h2>Claim details</h2>'
                    + "".join(_claim_section(c, labels) for c in found.claims) + "</section>")
    if found.runs:
        body.append('<section id="runs"><h2>Runs</h2>'
                    + "".join(_run_section(r, labels, per_run) for r in found.runs) + "</section>")
    body.append('<section id="environment"><h2>Environment</h2><p>Where this report was generated (each claim '
                'lists the environment it ran in):</p>' + _kv(environment) + "</section>")
    data = {"plots": plots}
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{esc(title)}</title>'
        f"<style>{_asset('report.css')}</style></head><body>"
        + "".join(body)
        + f'<script type="application/json" id="report-data">{script_json(data)}</script>'
        + f"<script>{script}</script></body></html>\n"
    )
