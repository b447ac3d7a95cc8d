"""``plm reproduce``: listing, one claim end to end on tiny data, and every user error as one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from plmkit.cli.main import main

CLAIM = """id: ngram-order
claim: Perplexity falls with order.
reference: {{source: seed table, figures: {{1-gram: 962}}}}
runner: classic:ngram_order
requires: {{data: [tiny/train.txt, tiny/test.txt]}}
budgets:
  small: {{train: tiny/train.txt, test: tiny/test.txt, max_order: {order}}}
"""

TEXT = ["the cat sat on the mat", "the dog sat on the rug", "a cat and a dog sat on the mat",
        "the cat saw the dog on the rug", "a dog saw a cat"]


def _setup(tmp_path: Path, order: int = 3) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "tiny").mkdir(parents=True)
    (data / "tiny" / "train.txt").write_text("\n".join(TEXT * 20) + "\n")
    (data / "tiny" / "test.txt").write_text("the cat sat on the rug\na dog saw the mat\n")
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "ngram-order.yaml").write_text(CLAIM.format(order=order))
    return data, claims


def _one_error_line(capsys, code, expect_code=2):
    assert code == expect_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_list_shows_the_shipped_claims(capsys):
    assert main(["reproduce", "--list"]) == 0
    assert "ngram-order" in capsys.readouterr().out
    assert main(["reproduce", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["id"] == "ngram-order" and r["claim"] for r in rows)


def test_a_claim_end_to_end_then_listed_with_its_verdict(tmp_path, capsys):
    data, claims = _setup(tmp_path)
    out = tmp_path / "out"
    assert main(["reproduce", "ngram-order", "--out", str(out), "--data", str(data), "--claims-dir", str(claims)]) == 0
    res = json.loads((out / "claim.json").read_text())
    assert res["verdict"] in ("held", "not held", "inconclusive") and res["rule"]
    assert set(res["ours"]) == {"1-gram KN", "2-gram KN", "3-gram KN", "1-gram add-k", "2-gram add-k", "3-gram add-k"}
    assert f"ngram-order: {res['verdict']}" in capsys.readouterr().out
    # run again: every step is read back, the same verdict comes out
    assert main(["reproduce", "ngram-order", "--out", str(out), "--data", str(data), "--claims-dir", str(claims)]) == 0
    assert "step order-1 ..." not in capsys.readouterr().err
    assert main(["reproduce", "--list", "--json", "--out", str(out), "--data", str(data),
                 "--claims-dir", str(claims)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["verdict"] == res["verdict"]


def test_unknown_claim_names_the_list(capsys):
    line = _one_error_line(capsys, main(["reproduce", "ngram-ordr", "--out", "x"]))
    assert "unknown claim 'ngram-ordr'" in line and "did you mean 'ngram-order'" in line and "known claims:" in line


def test_missing_prerequisite_is_one_line(tmp_path, capsys):
    line = _one_error_line(capsys, main(["reproduce", "ngram-order", "--out", str(tmp_path / "o"),
                                         "--data", str(tmp_path)]))
    assert "claim ngram-order: missing prerequisite: data file" in line and "wikitext-2" in line
    assert not (tmp_path / "o").exists()


def test_usage_errors(tmp_path, capsys):
    assert "--out DIR is required" in _one_error_line(capsys, main(["reproduce", "ngram-order"]))
    assert "name a CLAIM" in _one_error_line(capsys, main(["reproduce"]))
    assert "--list takes no CLAIM" in _one_error_line(capsys, main(["reproduce", "--list", "ngram-order"]))
    assert "no claims folder" in _one_error_line(capsys, main(["reproduce", "--list", "--claims-dir",
                                                                str(tmp_path / "none")]))
    assert "invalid choice" in _one_error_line(capsys, main(["reproduce", "x", "--budget", "huge"]))


def test_out_of_another_claim_is_refused(tmp_path, capsys):
    data, claims = _setup(tmp_path, order=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    line = _one_error_line(capsys, main(["reproduce", "ngram-order", "--out", str(out), "--data", str(data),
                                         "--claims-dir", str(claims)]))
    assert "holds files of something else" in line and (out / "keep.txt").read_text() == "x"
