"""``plm report``: what it found, the page it wrote, and one line + exit 2 for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plmkit.cli.main import main
from pretrain_recipes import tiny_clm_recipe
from tests.reporting.fakes import fake_claim, write_run

REPO = Path(__file__).resolve().parents[2]


def test_report_of_a_reproduce_folder_and_a_run(tmp_path, capsys):
    fake_claim(tmp_path / "claims", "ngram-order")
    run = write_run(tmp_path / "runs" / "bert")
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "claims"), str(run), "--out", str(out), "--title", "T<1>"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == str(out)
    assert cap.err.splitlines()[0] == "found 1 claim(s) and 3 run(s)"
    lines = cap.err.splitlines()
    assert f"  run bert: 8 logged steps, 2 evaluations: {run}" in lines  # labels: below each argument's parent
    assert f"  run claims/ngram-order/runs/arm-0: 8 logged steps, 2 evaluations: " \
           f"{tmp_path / 'claims' / 'ngram-order' / 'runs' / 'arm-0'}" in lines
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>T&lt;1&gt;</title>" in page


@pytest.mark.parametrize("case", ["empty-dir", "bad-line", "out-not-html", "out-is-dir", "missing"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    run = write_run(tmp_path / "run")
    out = tmp_path / "r.html"
    if case == "empty-dir":
        (tmp_path / "empty").mkdir()
        args, expected = [tmp_path / "empty"], f"{tmp_path / 'empty'}: no claim.json or metrics.jsonl in it or below it"
    elif case == "bad-line":
        with open(run / "metrics.jsonl", "a") as f:
            f.write("{oops\n")
        args, expected = [run], f"{run / 'metrics.jsonl'}:9: not valid JSON"
    elif case == "out-not-html":
        out = tmp_path / "metrics.json"
        out.write_text("{}")
        args, expected = [run], f"--out {out}: is an existing file not ending in .html"
    elif case == "out-is-dir":
        out = tmp_path / "dir.html"
        out.mkdir()
        args, expected = [run], f"--out {out}: exists and is not a file"
    else:
        args, expected = [tmp_path / "nowhere"], f"{tmp_path / 'nowhere'}: no such file or directory"
    p = subprocess.run([sys.executable, "-m", "plmkit", "report", *map(str, args), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"plm report: error: {expected}"), p.stderr
    if case == "out-not-html":
        assert out.read_text() == "{}"  # left as it was


def test_out_must_be_an_html_path(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert main(["report", str(run), "--out", str(tmp_path / "report.txt")]) == 2
    assert capsys.readouterr().err == (f"plm report: error: --out {tmp_path / 'report.txt'}: does not end in .html; "
                                       "expected the path of the .html file to write\n")
    assert not (tmp_path / "report.txt").exists()
    (tmp_path / "d").mkdir()
    assert main(["report", str(run), "--out", str(tmp_path / "d")]) == 2
    assert "--out " + str(tmp_path / "d") + ": is a directory not ending in .html" in capsys.readouterr().err


def test_report_of_a_real_pretraining_run(corpus, tmp_path, capsys):
    """A real (tiny) plm pretrain run: its logs, recipe and summary as the trainer writes them."""
    import json

    from plmkit.reporting.html import plot_data
    from plmkit.reporting.sources import discover

    run = tmp_path / "run"
    assert main(["pretrain", str(tiny_clm_recipe(corpus, tmp_path)), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "found 0 claim(s) and 1 run(s)\n  run run: 6 logged steps, 2 evaluations: " in err
    (r,) = discover([run]).runs
    assert r.recipe[0] == "recipe.yaml" and r.recipe[1] == (run / "recipe.yaml").read_text()
    assert r.summary[0] == "final/train_summary.json" and r.summary[1]["step"] == 6
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    plots = {p["metric"]: p for p in plot_data(discover([run]))[0]}
    assert plots["loss"]["series"][0]["points"] == [[x["step"], float(f"{x['loss']:.6g}")] for x in logged]
    assert [p[0] for p in plots["loss"]["series"][1]["points"]] == [3, 6]  # the evaluations
    page = out.read_text()
    assert "<summary>Configuration (recipe.yaml)</summary>" in page and "gpt2-tiny" in page
