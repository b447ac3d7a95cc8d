"""``plm edit`` end to end on a tiny LLaMA: CounterFact / zsRE metrics files, a saved edited checkpoint, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plmkit.cli.main import main

import plmkit


def tiny(name, tok, seed=0, **kw):
    """A small random model of ``name`` for ``tok`` (as tests/knowledge/conftest.py builds them)."""
    torch.manual_seed(seed)
    return plmkit.load(name, vocab_size=len(tok), bos_token_id=None, eos_token_id=None, **kw).eval()

CF = [{"case_id": i, "prompt": f"{s} is located in", "target_new": new, "subject": s, "ground_truth": true,
       "rephrase_prompt": f"the city {s} is located in", "locality_prompt": f"{o} is located in",
       "locality_ground_truth": true}
      for i, (s, new, true, o) in enumerate([("Paris", "Japan", "France", "Rome"), ("Berlin", "Spain", "Germany", "Tokyo"),
                                             ("Madrid", "France", "Spain", "Paris")])]
ZSRE = [{"subject": "Paris", "src": "Which country is Paris in?", "pred": "France", "rephrase": "Paris is in which country?",
         "alt": "Japan", "answers": ["France"], "loc": "nq question: where is Berlin", "loc_ans": "Germany",
         "cond": ""}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, bpe_tok, text_lines):
    root = tmp_path_factory.mktemp("edit")
    model = tiny("llama-tiny", bpe_tok, seed=2, num_layers=4)
    model.save_pretrained(root / "model")
    bpe_tok.save(root / "model")
    (root / "cf.json").write_text(json.dumps(CF))
    (root / "zsre.json").write_text(json.dumps(ZSRE))
    (root / "corpus.txt").write_text("\n".join(text_lines))
    return root


def common_args(root: Path, method: str = "rome") -> list[str]:
    return ["edit", "--method", method, "--model", str(root / "model"), "--layers", "1",
            "--stats-corpus", str(root / "corpus.txt"), "--stats-samples", "300", "--stats-seq-len", "32",
            "--stats-dir", str(root / "stats"), "--no-progress", "--hparams", str(root / f"{method}.yaml")]


def write_hparams(root: Path, method: str) -> None:
    extra = {"rome": "n_context: 1\ncontext_length: 3\nv: {steps: 4}\n",
             "memit": "n_context: 1\ncontext_length: 3\nv: {steps: 4}\nmom2_weight: 10.0\n",
             "ft": "steps: 3\n", "ft-l": "steps: 3\nnorm_constraint: 0.001\n",
             "kn": "steps: 3\nn_context: 1\ncontext_length: 3\n"}[method]
    (root / f"{method}.yaml").write_text(f"method: {method}\n{extra}")


@pytest.mark.parametrize("method", ["rome", "memit", "ft-l"])
def test_counterfact_run_writes_metrics_in_the_issue_shape(setup, method, capsys):
    write_hparams(setup, method)
    out = setup / f"out-{method}"
    rc = main(common_args(setup, method) + ["--data", str(setup / "cf.json"), "--n", "2", "--fluency-tokens", "6",
                                            "--out", str(out)] + (["--batch-size", "2"] if method == "memit" else []))
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"unedited", "edited", "seconds_per_edit"}
    for k in ("unedited", "edited"):
        assert set(m[k]) == {"es", "ps", "ns", "s", "fluency"}
        for key in ("es", "ps", "ns", "s"):
            assert 0.0 <= m[k][key] <= 1.0
    assert m["seconds_per_edit"] > 0
    rows = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1]
    # ES is the fraction of cases with log P(new) > log P(true) on the prompt
    es = sum(r["edited"]["logp"]["prompt_new"] > r["edited"]["logp"]["prompt_true"] for r in rows) / 2
    assert m["edited"]["es"] == es
    d = json.loads((out / "details.json").read_text())
    assert d["n_cases"] == 2 and d["layers"] == [1] and set(d["edited"]) == {"em", "pm", "nm", "n"}
    assert d["layers_source"] == "--layers" and d["cpu_seconds_per_edit"] > 0
    assert all(r["edit_cpu_seconds"] > 0 for r in rows)


def test_covariance_cache_is_reused_between_runs(setup, capsys):
    write_hparams(setup, "rome")
    for i in range(2):
        assert main(common_args(setup) + ["--data", str(setup / "cf.json"), "--n", "1", "--fluency-tokens", "0",
                                          "--out", str(setup / f"cache{i}")]) == 0
    assert len(list((setup / "stats").glob("L1-*.safetensors"))) == 1
    a, b = (json.loads((setup / f"cache{i}" / "metrics.json").read_text()) for i in range(2))
    assert a["edited"] == b["edited"]


def test_zsre_run_uses_token_accuracy_metrics(setup, capsys):
    write_hparams(setup, "ft")
    out = setup / "zsre"
    assert main(common_args(setup, "ft") + ["--data", str(setup / "zsre.json"), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["edited"]) == {"efficacy", "paraphrase", "specificity"}


def test_single_edit_saves_a_checkpoint_both_loaders_read(setup, capsys):
    import plmkit

    write_hparams(setup, "rome")
    out = setup / "edited"
    assert main(common_args(setup) + ["--prompt", "Paris is located in", "--subject", "Paris", "--target", "Japan",
                                      "--target-true", "France", "--out", str(out)]) == 0
    prov = [json.loads(x) for x in (out / "edits.jsonl").read_text().splitlines()]
    assert prov[0]["request"]["target_new"] == "Japan" and prov[0]["layers"] == [1] and prov[0]["method"] == "rome"
    orig, edited = plmkit.load(str(setup / "model")), plmkit.load(str(out))
    changed = [k for k, v in edited.state_dict().items() if not torch.equal(v, orig.state_dict()[k])]
    assert changed == ["layers.1.mlp.down.weight"]
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[5, 9, 30, 41]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, edited.eval()(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("extra, msg", [
    (["--prompt", "Paris is located in", "--subject", "Rome", "--target", "Japan"], "not found in prompt"),
    (["--prompt", "Paris is located in", "--subject", "Paris", "--target", " "], "empty target"),
    (["--prompt", "Paris is located in", "--subject", "Paris", "--target", "France", "--target-true", "France"],
     "true object already"),
    (["--prompt", "Paris is located in", "--subject", "Paris", "--target", "Japan", "--layers", "9"], "layers"),
    (["--data", "nope.json"], "not found"),
])
def test_bad_input_is_one_line_and_exit_2(setup, capsys, extra, msg):
    write_hparams(setup, "rome")
    rc = main(common_args(setup) + extra + ["--out", str(setup / "bad")])
    err = capsys.readouterr().err
    assert rc == 2
    assert msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_layers_from_a_trace_summary(tmp_path):
    from plmkit.cli.edit import layers_from_trace
    from plmkit.errors import UserError

    curve = [0.0, 0.1, 0.05, 0.3, 0.2, 0.0]
    summary = {"average": {"mlp_window": {"last subject token": curve}}, "average_known": None}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert layers_from_trace(str(tmp_path / "summary.json"), "rome", 6)[0] == [3]
    layers, why = layers_from_trace(str(tmp_path), "memit", 6)  # the folder works too
    assert layers == [0, 1, 2, 3] and "peaks at layer 3 (+0.300, all traced facts" in why
    known = {"average": summary["average"], "average_known": {"mlp": {"last subject token": curve[::-1]}}}
    (tmp_path / "known.json").write_text(json.dumps(known))
    assert layers_from_trace(str(tmp_path / "known.json"), "rome", 6)[0] == [2]  # the known facts' curve wins
    with pytest.raises(UserError, match="6 layers traced, the model has 4"):
        layers_from_trace(str(tmp_path / "summary.json"), "rome", 4)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="summary.json of 'plm trace'"):
        layers_from_trace(str(tmp_path / "bad.json"), "rome", 6)
    with pytest.raises(UserError, match="file not found"):
        layers_from_trace(str(tmp_path / "nothing"), "rome", 6)


def test_layers_auto_from_plm_trace_on_the_same_model(setup, capsys):
    """plm trace -> plm edit --layers auto --trace DIR: the edited layer is the traced MLP peak."""
    facts = [{"known_id": 0, "prompt": "Paris is located in", "subject": "Paris", "attribute": "France"},
             {"known_id": 1, "prompt": "Berlin is located in", "subject": "Berlin", "attribute": "Germany"}]
    (setup / "facts.json").write_text(json.dumps(facts))
    trace = setup / "trace"
    assert main(["trace", "--model", str(setup / "model"), "--facts", str(setup / "facts.json"), "--samples", "2",
                 "--kinds", "mlp", "--no-plots", "--out", str(trace)]) == 0
    curve = json.loads((trace / "summary.json").read_text())["average"]["mlp"]["last subject token"]
    peak = max(range(len(curve)), key=lambda i: curve[i])
    write_hparams(setup, "rome")
    args = [a for a in common_args(setup) if a not in ("--layers", "1")]
    out = setup / "auto"
    assert main(args + ["--layers", "auto", "--trace", str(trace), "--prompt", "Paris is located in",
                        "--subject", "Paris", "--target", "Japan", "--out", str(out)]) == 0
    prov = json.loads((out / "edits.jsonl").read_text().splitlines()[-1])
    assert prov["layers"] == [peak] and f"peaks at layer {peak}" in prov["layers_source"]
    capsys.readouterr()
    assert main(args + ["--layers", "auto", "--prompt", "Paris is located in", "--subject", "Paris",
                        "--target", "Japan", "--out", str(out)]) == 2
    assert "--layers auto needs --trace" in capsys.readouterr().err


def test_start_selects_later_records(setup):
    from plmkit.knowledge.edit.evaluate import read_cases

    kind, cases, skipped = read_cases(setup / "cf.json", 1, start=1)
    assert kind == "counterfact" and [c.id for c in cases] == [1] and not skipped
    assert [c.id for c in read_cases(setup / "cf.json", None, start=1)[1]] == [1, 2]


def test_smollm2_recipe_layers_are_the_shipped_trace_peak():
    """recipes/editing/*-llama*.yaml carry the layers that --layers auto derives from the shipped SmolLM2 trace."""
    import yaml

    from plmkit.cli.edit import layers_from_trace

    root = Path(__file__).resolve().parents[2] / "recipes" / "editing"
    trace = root / "traces" / "smollm2-135m-instruct.json"
    for method in ("rome", "memit"):
        want, _ = layers_from_trace(str(trace), method, 30)
        for f in sorted(root.glob(f"{method}-llama*.yaml")):
            assert yaml.safe_load(f.read_text())["layers"] == want, f.name


def test_unedited_scores_reused_from_an_earlier_run(setup, capsys):
    """--unedited DIR: a second method on the same cases takes the first run's unedited scores (the same
    as recomputing them), and a run with other settings is refused in one line."""
    write_hparams(setup, "ft")
    write_hparams(setup, "rome")
    base = ["--data", str(setup / "cf.json"), "--n", "2", "--fluency-tokens", "4"]
    assert main(common_args(setup, "ft") + base + ["--out", str(setup / "u-ft")]) == 0
    assert main(common_args(setup) + base + ["--out", str(setup / "u-rome")]) == 0
    # mark the earlier run's unedited rows, to see them come back rather than being recomputed
    marked = [json.loads(x) for x in (setup / "u-ft" / "cases.jsonl").read_text().splitlines()]
    for r in marked:
        r["unedited"]["marker"] = r["id"]
    (setup / "u-ft" / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in marked))
    assert main(common_args(setup) + base + ["--unedited", str(setup / "u-ft"), "--out", str(setup / "u-rome2")]) == 0
    rows = {d: [json.loads(x) for x in (setup / d / "cases.jsonl").read_text().splitlines()]
            for d in ("u-ft", "u-rome", "u-rome2")}
    for a, b, c in zip(rows["u-ft"], rows["u-rome"], rows["u-rome2"]):
        assert c["unedited"] == a["unedited"] and c["unedited"]["marker"] == c["id"]
        assert c["unedited"]["logp"] == pytest.approx(b["unedited"]["logp"], abs=1e-6)
        assert c["unedited"]["generation"] == b["unedited"]["generation"]
        assert c["edited"]["logp"] == pytest.approx(b["edited"]["logp"], abs=1e-6)
    assert json.loads((setup / "u-rome2" / "details.json").read_text())["unedited_from"] == str(setup / "u-ft")
    capsys.readouterr()
    for extra, msg in ((["--fluency-tokens", "5"], "fluency_tokens is 4"), (["--seed", "3"], "seed is 0"),
                       (["--start", "2"], "case 2 is missing")):
        args = common_args(setup) + base + extra + ["--unedited", str(setup / "u-ft"), "--out", str(setup / "bad")]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
