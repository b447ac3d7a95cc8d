"""plm icl: label log-likelihoods equal transformers' on the same weights; demonstrations, truncation,
calibration and bad-input refusals; the CLI end to end on a tiny random Llama saved to disk."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.prompting.icl import ICLSettings, PromptBuilder, run_one, sample_demonstrations
from plmkit.prompting.scoring import continuation_logprobs
from plmkit.prompting.templates import load_templates, parse_template

POS, NEG = ["good", "great", "fine"], ["bad", "awful", "poor"]
FILL = ["the", "movie", "film", "was", "a", "plot", "and", "very", "story", "it"]
SST2 = Path(__file__).resolve().parents[2] / "recipes" / "prompts" / "sst2"


def _rows(rng, n):
    rows = []
    for _ in range(n):
        y = rng.random() < 0.5
        words = rng.sample(FILL, 4) + [rng.choice(POS if y else NEG)]
        rng.shuffle(words)
        rows.append((" ".join(words), str(int(y))))
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A byte-level BPE tokenizer + random llama-tiny saved as an HF directory, and a toy SST-2-shaped task."""
    d = tmp_path_factory.mktemp("icl")
    rng = random.Random(0)
    data = d / "data"
    data.mkdir()
    for split, n in (("train", 40), ("dev", 12)):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in _rows(rng, n)))
    corpus = d / "corpus.txt"
    corpus.write_text(" ".join(POS + NEG + FILL + ["Review", "Sentiment", "positive", "negative", "It", "was",
                                                   "terrible", "Input", "Question", "Answer"]) * 5 + "\n")
    tok = plmkit.train_tokenizer([str(corpus)], kind="bpe", vocab_size=320)
    torch.manual_seed(0)
    model = plmkit.load("llama-tiny", vocab_size=len(tok), max_position_embeddings=256)
    model.save_pretrained(d / "model")
    tok.save(d / "model")
    model = plmkit.load(d / "model").eval()
    return SimpleNamespace(dir=d, data=data, model=model, tok=plmkit.load_tokenizer(d / "model"))


def _examples(path):
    from plmkit.tasks.specs import get_task, read_split

    return read_split(get_task("sst2"), path, "train")


def test_logprobs_equal_transformers_and_shared_prefix_equals_reencoding(tiny):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    ref = transformers.AutoModelForCausalLM.from_pretrained(tiny.dir / "model").eval()
    g = torch.Generator().manual_seed(1)
    V = tiny.model.config.vocab_size
    prefix = torch.randint(0, V, (17,), generator=g).tolist()
    items = [(torch.randint(0, V, (n,), generator=g).tolist(),
              [torch.randint(0, V, (m,), generator=g).tolist() for m in (1, 3)]) for n in (2, 5, 9)]
    items.append((items[0][0], [[5], [7], [11]]))  # all single-token: one row scores them all
    with torch.no_grad():
        shared = continuation_logprobs(tiny.model, prefix, items, batch_size=2, share_prefix=True)
        fresh = continuation_logprobs(tiny.model, prefix, items, batch_size=3, share_prefix=False)
        for (query, conts), got_s, got_f in zip(items, shared, fresh):
            for c, s, f in zip(conts, got_s, got_f):
                ids = prefix + query + c
                lp = ref(torch.tensor([ids])).logits[0].float().log_softmax(-1)
                start = len(prefix) + len(query)
                want = [float(lp[start - 1 + t, tok]) for t, tok in enumerate(c)]
                assert len(s) == len(c)
                np.testing.assert_allclose(s, want, atol=1e-4, rtol=0)
                np.testing.assert_allclose(f, want, atol=1e-4, rtol=0)


def test_demonstrations_seeded_balanced_from_train_and_refusals(tiny):
    train = _examples(tiny.data / "train.tsv")
    a = sample_demonstrations(train, 4, 3, ("0", "1"), balanced=True)
    assert a == sample_demonstrations(train, 4, 3, ("0", "1"), balanced=True)
    assert a != sample_demonstrations(train, 4, 4, ("0", "1"), balanced=True)
    assert sorted(e.label for e in a) == ["0", "0", "1", "1"]
    assert all(e in train for e in a)
    n1 = sum(e.label == "1" for e in train)
    with pytest.raises(UserError, match=r"class '1'.*has " + str(n1)):
        sample_demonstrations(train, 2 * n1 + 2, 0, ("0", "1"), balanced=True)
    with pytest.raises(UserError, match="more than the 40 training examples"):
        sample_demonstrations(train, 41, 0, ("0", "1"))


def test_template_refusals(tmp_path):
    with pytest.raises(UserError, match=r"no input slot \{text\}"):
        parse_template({"template": "Review: Sentiment:", "verbalizer": {"0": " bad", "1": " good"}}, "t.yaml")
    with pytest.raises(UserError, match=r"slot \{sentence\} is unknown"):
        parse_template({"template": "{sentence}", "verbalizer": {"0": " bad", "1": " good"}}, "t.yaml")
    with pytest.raises(UserError, match="missing label '1'"):
        parse_template({"template": "{text}", "verbalizer": {"0": " bad"}}, "t.yaml", labels=("0", "1"))
    with pytest.raises(UserError, match=r"no slot \{text_pair\}"):
        parse_template({"template": "{text}", "verbalizer": {"0": " a", "1": " b"}}, "t.yaml", pair=True)
    with pytest.raises(UserError, match="unknown key 'verbaliser'"):
        parse_template({"template": "{text}", "verbaliser": {}}, "t.yaml")
    ts = load_templates([SST2], labels=("0", "1"), pair=False, task="sst2")
    assert len(ts) >= 3 and all("text" in t.slots for t in ts)
    bad = tmp_path / "bad.yaml"
    bad.write_text("template: '{text}\nverbalizer: x\n")
    with pytest.raises(UserError, match="bad.yaml:.*not valid YAML"):
        load_templates([bad])


def test_single_token_refusal_names_the_word(tiny):
    t = parse_template({"template": "{text} It was", "verbalizer": {"0": " xqzjv", "1": " good"}}, "v.yaml")
    b = PromptBuilder(tiny.tok, t)
    assert len(b.cont_ids["0"]) > 1
    with pytest.raises(UserError, match=r"v.yaml: verbalizer ' xqzjv' of label '0' is \d+ tokens.*drop --single-token"):
        b.check_single_token()


def test_truncation_by_whole_demonstrations_is_recorded(tiny):
    train, dev = _examples(tiny.data / "train.tsv"), _examples(tiny.data / "dev.tsv")
    t = parse_template({"template": "Review: {text}\nSentiment:", "verbalizer": {"0": " bad", "1": " good"}}, "r.yaml")
    b = PromptBuilder(tiny.tok, t)
    demos = sample_demonstrations(train, 8, 0, ("0", "1"))
    full = len(b.full(demos, dev[0].text, None))
    limit = full - 5  # the first example must drop at least one demonstration
    s = ICLSettings(shots=[8], max_length=limit)
    recs = run_one(tiny.model, b, demos, dev, ("0", "1"), s)
    for r, ex in zip(recs, dev):
        n = r["demonstrations_used"]
        assert r["demonstrations_requested"] == 8 and r["prompt_tokens"] <= limit
        assert 0 <= n < 8 or full <= limit
        if n < 8:  # one more (earlier) demonstration would not have fitted
            assert len(b.full(demos[8 - n - 1:], ex.text, None)) > limit
        assert r["prompt_tokens"] == len(b.full(demos[8 - n:], ex.text, None))
    assert recs[0]["demonstrations_used"] < 8
    # the kept demonstrations are the last ones: the truncated prompt is a suffix of the full one's text
    kept = recs[0]["demonstrations_used"]
    short = tiny.tok.decode(b.full(demos[8 - kept:], dev[0].text, None))
    assert tiny.tok.decode(b.full(demos, dev[0].text, None)).endswith(short)


def test_calibration_divides_by_content_free_probabilities(tiny):
    """Independent recomputation: score "N/A", "", "[MASK]" with plain forwards, then p / mean(p_cf)."""
    train, dev = _examples(tiny.data / "train.tsv"), _examples(tiny.data / "dev.tsv")
    t = parse_template({"template": "{text} It was", "verbalizer": {"0": " bad", "1": " good"}}, "c.yaml")
    b = PromptBuilder(tiny.tok, t)
    demos = sample_demonstrations(train, 2, 0, ("0", "1"))
    recs = run_one(tiny.model, b, demos, dev, ("0", "1"), ICLSettings(shots=[2]))

    def probs(text):  # sum of the verbalizer tokens' log-probabilities, one full forward per label
        ids = b.full(demos, text, None)
        s = []
        for lab in ("0", "1"):
            c = b.cont_ids[lab]
            with torch.no_grad():
                lp = tiny.model(torch.tensor([ids + c])).logits[0].log_softmax(-1)
            s.append(sum(float(lp[len(ids) - 1 + t, x]) for t, x in enumerate(c)))
        s = torch.tensor(s, dtype=torch.float64)
        return s, s.softmax(0)

    p_cf = torch.stack([probs(c)[1] for c in ("N/A", "", "[MASK]")]).mean(0)
    for r, ex in zip(recs, dev):
        s, p = probs(ex.text)
        assert r["scores"]["0"] == pytest.approx(float(s[0]), abs=1e-4)
        assert r["calibrated_prediction"] == ("0", "1")[int((p / p_cf).argmax())]
        assert r["prediction"] == ("0", "1")[int(s.argmax())]


def _cli(*argv):
    from plmkit.cli.main import main

    return main(list(argv))


def test_cli_metrics_layout_and_predictions(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    rc = _cli("icl", "--model", str(tiny.dir / "model"), "--task", "sst2", "--data", str(tiny.data),
              "--template", str(SST2 / "review.yaml"), str(SST2 / "great-terrible.yaml"), "--shots", "0,2",
              "--seeds", "2", "--calibrate", "--balanced", "--cache-benchmark", "4", "--score", "pmi",
              "--out", str(out))
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["by_shots"]) == {"0", "2"} and set(m["calibrated_by_shots"]) == {"0", "2"}
    assert {"accuracy", "accuracy_std", "accuracy_min"} <= set(m["by_shots"]["2"])
    assert m["by_shots"]["2"]["runs"] == 4 and m["by_shots"]["0"]["runs"] == 2  # 2 templates x 2 seeds
    assert set(m["by_template"]) == {"review", "great-terrible"}
    assert m["scoring"]["score"] == "pmi" and "PMI" in m["scoring"]["description"]
    assert m["prefix_cache"]["max_abs_logprob_diff"] < 1e-4
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 * (2 + 4)
    assert {p["demonstrations_used"] for p in preds if p["shots"] == 2} == {2}
    acc = np.mean([p["prediction"] == p["label"] for p in preds if p["template"] == "review" and p["shots"] == 0])
    assert m["by_template"]["review"]["raw"]["0"]["accuracy"] == pytest.approx(acc)


@pytest.mark.parametrize("argv, message", [
    (["--chat"], "--chat needs the model's chat template"),
    (["--shots", "0,30", "--balanced"], "needs 15 training examples of class"),
    (["--single-token", "--template", "BAD"], "is .* tokens"),
])
def test_cli_refusals_one_line_exit_2(tiny, tmp_path, capsys, argv, message):
    tmpl = tmp_path / "multi.yaml"
    tmpl.write_text('template: "{text} It was"\nverbalizer: {"0": " xqzjv", "1": " good"}\n')
    argv = [str(tmpl) if a == "BAD" else a for a in argv]
    base = ["icl", "--model", str(tiny.dir / "model"), "--task", "sst2", "--data", str(tiny.data),
            "--template", str(SST2 / "review.yaml"), "--out", str(tmp_path / "o")]
    if "--template" in argv:
        i = base.index("--template")
        base = base[:i] + base[i + 2:]
    train = _examples(tiny.data / "train.tsv")
    if "0,30" in argv:
        n = min(sum(e.label == lab for e in train) for lab in "01")
        argv = ["--shots", f"0,{2 * n + 2}", "--balanced"]
        message = f"needs {n + 1} training examples of class"
    with pytest.raises(SystemExit) as e:
        from plmkit.cli.main import main

        rc = main(base + argv)
        raise SystemExit(rc)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert len(err.splitlines()) == 1 and __import__("re").search(message, err), err


@pytest.mark.parametrize("task", ["sst2", "rte", "mrpc", "cola"])
def test_shipped_templates_fit_their_task(task):
    from plmkit.tasks.specs import get_task

    spec = get_task(task)
    ts = load_templates([SST2.parent / task], labels=tuple(spec.labels), pair=spec.text_pair_column is not None,
                        task=task)
    assert len(ts) >= 2 and len({t.name for t in ts}) == len(ts)


def test_run_one_encodes_the_demonstrations_once_and_scores_through_the_cache(tiny):
    """The evaluation path (not only the scoring helper) uses the shared prefix: one batch-1 forward over the
    demonstrations per (template, seed), then every scoring forward carries a cache and only query tokens; the
    records equal those of re-encoding the prefix in every row."""
    train, dev = _examples(tiny.data / "train.tsv"), _examples(tiny.data / "dev.tsv")
    t = parse_template({"template": "Review: {text}\nSentiment:", "verbalizer": {"0": " bad", "1": " good"}}, "r.yaml")
    b = PromptBuilder(tiny.tok, t)
    demos = sample_demonstrations(train, 6, 0, ("0", "1"))
    fulls = [b.full(demos, e.text, None) for e in dev]
    prefix_len = len(b.prefix(demos, fulls))
    assert prefix_len > 20
    calls = []

    def spy(module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        calls.append((tuple(ids.shape), kwargs.get("past_key_values") is not None))

    h = tiny.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        with torch.no_grad():
            shared = run_one(tiny.model, b, demos, dev, ("0", "1"), ICLSettings(shots=[6], batch_size=4))
            n_shared = len(calls)
            fresh = run_one(tiny.model, b, demos, dev, ("0", "1"),
                            ICLSettings(shots=[6], batch_size=4, share_prefix=False))
    finally:
        h.remove()
    first, rest = calls[0], calls[1:n_shared]
    assert first == ((1, prefix_len), False)  # the demonstrations, once
    longest_query = max(len(f) for f in fulls) - prefix_len
    assert rest and all(cached and shape[1] <= longest_query + 2 for shape, cached in rest)
    assert all(not cached and shape[1] > prefix_len for shape, cached in calls[n_shared:])
    for a, c in zip(shared, fresh):
        assert a["prediction"] == c["prediction"] and a["calibrated_prediction"] == c["calibrated_prediction"]
        for lab in ("0", "1"):
            assert a["scores"][lab] == pytest.approx(c["scores"][lab], abs=1e-4)


# ---------------------------------------------------------------------------- precision
def _random_items(V, g):
    prefix = torch.randint(0, V, (23,), generator=g).tolist()
    items = [(torch.randint(0, V, (n,), generator=g).tolist(),
              [torch.randint(0, V, (m,), generator=g).tolist() for m in (1, 2)]) for n in (3, 6, 10)]
    items.append((items[1][0], [[5], [9]]))  # all single-token: one row scores them all
    return prefix, items


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_bf16_label_logprobs_near_fp32_and_cache_equals_reencoding(tiny, family):
    """The bf16 copy's label log-likelihoods stay within 5e-3 (absolute, nats; <= 8e-4 measured) of float32 on
    a random tiny model, the shared-prefix path equals re-encoding the prefix in every row under bf16 too (within
    3e-3, <= 3e-4 measured: the two paths round different bf16 intermediates), and the caller's model is left
    float32 and untouched. (SmolLM2's figures: docs/PROMPTING.md "Precision".)"""
    from plmkit.prompting.scoring import scoring_model

    if family == "llama":
        model = tiny.model
    else:
        torch.manual_seed(0)
        model = plmkit.load("gpt2-tiny", vocab_size=tiny.model.config.vocab_size).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = scoring_model(model, "bf16")
    linears = [m for m in fast.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert fast is not model and linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert fast.embeddings.word.weight is model.embeddings.word.weight  # shared, not copied (nor cast)
    assert scoring_model(model, "fp32") is model
    prefix, items = _random_items(model.config.vocab_size, torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = continuation_logprobs(model, prefix, items, batch_size=2, share_prefix=True)
        shared = continuation_logprobs(fast, prefix, items, batch_size=2, share_prefix=True)
        fresh = continuation_logprobs(fast, prefix, items, batch_size=3, share_prefix=False)
    flat = lambda x: np.array([v for item in x for cont in item for v in cont])  # noqa: E731
    assert np.abs(flat(shared) - flat(ref)).max() < 5e-3
    assert np.abs(flat(shared) - flat(fresh)).max() < 3e-3
    assert flat(shared).std() > 0.05 and not np.array_equal(flat(shared), flat(ref))  # really another precision
    after = model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())


def test_scoring_model_refuses_unknown_precision(tiny):
    from plmkit.prompting.scoring import scoring_model

    with pytest.raises(UserError, match="expected one of fp32, bf16"):
        scoring_model(tiny.model, "fp16")


# ---------------------------------------------------------------------------- resuming
def _icl_argv(tiny, out, shots="0,2,4", *extra):
    return ["icl", "--model", str(tiny.dir / "model"), "--task", "sst2", "--data", str(tiny.data),
            "--template", str(SST2 / "review.yaml"), str(SST2 / "great-terrible.yaml"), "--shots", shots,
            "--seeds", "2", "--calibrate", "--precision", "fp32", "--batch-size", "4", "--out", str(out), *extra]


def _without_seconds(m):
    m = dict(m, seconds=None, cpu_seconds=None)
    m["runs"] = [dict(r, seconds=None, cpu_seconds=None) for r in m["runs"]]
    return m


def test_interrupted_run_resumes_to_the_same_results(tiny, tmp_path, monkeypatch, capsys):
    """Killed after 3 runs, then started again: the 3 stored runs are not scored again, and metrics.json /
    predictions.jsonl equal those of an uninterrupted run (timings aside). A subset of the shots first, then
    the full set, reuses the subset's runs too."""
    import plmkit.prompting.icl as icl

    from plmkit.cli.main import main

    whole = tmp_path / "whole"
    assert main(_icl_argv(tiny, whole)) == 0
    calls, real = [], icl.run_one

    def dies_after_3(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    out = tmp_path / "resumed"
    monkeypatch.setattr(icl, "run_one", dies_after_3)
    capsys.readouterr()
    assert main(_icl_argv(tiny, out)) == 130  # the CLI's stop by signal
    err = capsys.readouterr().err
    assert "at template review, 4 shots, seed 0 (run 4 of 10)" in err and "continues from them" in err, err
    assert len(list((out / "runs").glob("*.json"))) == 3 and not (out / "metrics.json").exists()
    calls.clear()
    monkeypatch.setattr(icl, "run_one", lambda *a, **k: calls.append(1) or real(*a, **k))
    capsys.readouterr()
    assert main(_icl_argv(tiny, out)) == 0
    assert len(calls) == 2 * (1 + 2 + 2) - 3 and "reused 3 finished runs" in capsys.readouterr().out
    for o in (out, tmp_path / "subset"):
        if o.name == "subset":
            assert main(_icl_argv(tiny, o, "0,4")) == 0
            calls.clear()
            assert main(_icl_argv(tiny, o)) == 0
            assert len(calls) == 2 * 2  # only the 2-shot runs (2 templates x 2 seeds) are new
        assert (o / "predictions.jsonl").read_text() == (whole / "predictions.jsonl").read_text()
        got, want = (json.loads((d / "metrics.json").read_text()) for d in (o, whole))
        assert _without_seconds(got) == _without_seconds(want)
        assert [r["seconds"] for r in got["runs"]] != [None] * len(got["runs"]) and got["precision"] == "fp32"


@pytest.mark.parametrize("extra, message", [
    (["--score", "mean"], "holds runs made with score 'sum', this call has 'mean'"),
    (["--limit", "5"], "holds runs made with eval_digest"),
    (["--precision", "bf16"], "holds runs made with precision 'fp32', this call has 'bf16'"),
    (["--template", "EDITED"], "holds runs made with template 'review'"),
])
def test_stored_runs_of_other_settings_are_refused_unless_overwrite(tiny, tmp_path, capsys, extra, message):
    from plmkit.cli.main import main

    out = tmp_path / "o"
    assert main(_icl_argv(tiny, out, "0")) == 0
    edited = tmp_path / "review.yaml"
    edited.write_text((SST2 / "review.yaml").read_text().replace("Sentiment:", "Feeling:"))
    argv = _icl_argv(tiny, out, "0")
    if extra == ["--template", "EDITED"]:
        i = argv.index("--template")
        argv[i + 1: i + 3], extra = [str(edited)], []
    argv += extra
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "--overwrite" in err, err
    assert main(argv + ["--overwrite"]) == 0
    assert main(argv) == 0  # the stored runs are now this call's


@pytest.mark.parametrize("kind, expected", [("avx512_bf16", "bf16"), (None, "fp32")])
def test_precision_auto_follows_the_cpu_and_is_recorded(tiny, tmp_path, monkeypatch, capsys, kind, expected):
    import plmkit.models.kernels as kernels
    from plmkit.cli.main import main

    monkeypatch.setattr(kernels, "cpu_bf16", lambda: kind)
    argv = [a for a in _icl_argv(tiny, tmp_path / "o", "0") if a not in ("--precision", "fp32")]
    assert main(argv) == 0
    assert f"plm icl: precision {expected} (auto: " in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["precision"] == expected
