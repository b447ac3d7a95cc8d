"""``plm probe lama`` end to end on tiny saved models: files, metrics.json shape, clear errors."""

from __future__ import annotations

import json

import pytest

from plmkit.cli.main import main


def test_probe_lama_writes_metrics_predictions_and_plot(model_dirs, lama_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["probe", "lama", "--model", str(model_dirs["bert"]), "--data", str(lama_dir),
               "--source", "trex,squad", "--uhn", "--layers", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"sources", "relations", "overall", "layers", "uhn"} <= set(m)
    assert set(m["sources"]) == {"trex", "squad"} and set(m["relations"]) == {"P17", "P103", "P27", "squad"}
    for group in [m["overall"], *m["sources"].values(), *m["relations"].values()]:
        assert {"p_at_1", "p_at_10", "mrr", "n_facts", "n_skipped"} <= set(group)
        for k in ("p_at_1", "p_at_10", "mrr"):
            assert group[k] is None or 0.0 <= group[k] <= 1.0
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == m["overall"]["n_facts"] + m["overall"]["n_skipped"] == 7 + 3 + 3 + 2
    probed = [x for x in lines if x["mode"]]
    assert all({"prompt", "gold", "top10", "rank"} <= set(x) for x in probed)
    assert all("skipped" in x for x in lines if not x["mode"])
    assert len(m["layers"]) == 3 and m["layers"][-1] == m["overall"]["p_at_1"]  # MLM: all facts are mask facts
    assert (out / "layers.png").stat().st_size > 1000
    assert "P@1" in capsys.readouterr().out


def test_probe_lama_causal_covers_every_fact(model_dirs, lama_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["probe", "lama", "--model", str(model_dirs["gpt2"]), "--data", str(lama_dir), "--source",
                 "trex,google-re", "--max-facts", "2", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["overall"]["n_skipped"] == 0 and m["overall"]["n_facts"] == 2 * 4
    assert m["relations"]["P27"]["n_candidates"] == 2 and m["relations"]["P17"]["n_next_token"] == 2


@pytest.mark.parametrize("extra,message", [
    (["--relations", "P999"], "unknown relation 'P999'"),
    (["--source", "wiki"], "unknown LAMA source 'wiki'"),
    (["--max-facts", "0"], "argument --max-facts: expected a positive integer, got 0"),
])
def test_probe_lama_bad_input_exits_2(model_dirs, lama_dir, tmp_path, capsys, extra, message):
    rc = main(["probe", "lama", "--model", str(model_dirs["gpt2"]), "--data", str(lama_dir), "--out",
               str(tmp_path / "x"), *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_probe_lama_refuses_a_model_without_head(lama_dir, tmp_path, capsys, wordpiece_tok):
    from plmkit.models import load

    d = tmp_path / "minilm_like"
    load("bert-tiny", vocab_size=len(wordpiece_tok), head=None).save_pretrained(d)
    wordpiece_tok.save(d)
    rc = main(["probe", "lama", "--model", str(d), "--data", str(lama_dir), "--out", str(tmp_path / "x")])
    assert rc == 2 and "no LM/MLM head" in capsys.readouterr().err
