"""REALM (plmkit.objectives.realm): salient spans, the marginal likelihood against brute force over every
document of a tiny corpus, gradients into the retriever, in-line index refresh, and a run through
``plm pretrain``."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build
from plmkit.objectives.base import IGNORE
from plmkit.objectives.realm import REALM, marginal_nll, salient_spans

DOCS = [
    "The Duke of Wellington defeated Napoleon at Waterloo in 1815 .",
    "Paris is the capital of France and its largest city .",
    "The Denver Broncos won Super Bowl 50 in February 2016 .",
    "Marie Curie was born in Warsaw in 1867 .",
    "the river flows to the sea and the king likes bread .",
]
QUERIES = [
    "In 1815 the Duke of Wellington won a battle near Brussels .",
    "Super Bowl 50 was won by the Denver Broncos .",
    "she was born in Warsaw and moved to Paris .",
]


def _words(text):
    return text.split()


def test_salient_spans_hand_checked():
    got = lambda t: [" ".join(_words(t)[a:b]) for a, b in salient_spans(_words(t))]  # noqa: E731
    assert got("The Duke of Wellington won at Waterloo on June 18 , 1815 .") == [
        "Duke of Wellington", "Waterloo", "June 18 , 1815"]
    assert got("In the United States , Super Bowl 50 was played in 2016 by the Denver Broncos .") == [
        "United States", "Super Bowl 50", "2016", "Denver Broncos"]
    assert got("18 June 1815 and March 2000 and 1990s") == ["18 June 1815", "March 2000", "1990s"]
    # sentence-initial single capitals, pronouns, lower-case words and plain numbers are not salient
    assert got("Paris is big . He said that I was there with 300 men .") == []
    assert got("the cat sat on the mat") == []


def _cased_tok(tmp: Path):
    rng = random.Random(0)
    words = " ".join(DOCS + QUERIES).split()
    lines = DOCS + QUERIES + [" ".join(rng.choice(words) for _ in range(10)) for _ in range(60)]
    (tmp / "c.txt").write_text("\n".join(lines) + "\n")
    return plmkit.train_tokenizer([tmp / "c.txt"], kind="wordpiece", vocab_size=300, lowercase=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("realm")
    tok = _cased_tok(tmp)
    (tmp / "corpus.txt").write_text("\n".join(DOCS) + "\n")
    return tmp, tok


def _model(tok, seed=0):
    torch.manual_seed(seed)
    return plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2,
                       intermediate_size=64, hidden_dropout=0.0, attention_dropout=0.0,
                       mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id)


def _obj(tmp, tok, **kw):
    return build("realm", tokenizer=tok, corpus=str(tmp / "corpus.txt"), dim=16, **kw)


def test_salient_masking_masks_only_entity_or_date_tokens(setup):
    tmp, tok = setup
    obj = _obj(tmp, tok)
    torch.manual_seed(1)
    seen = set()
    for _ in range(30):
        for q in QUERIES:
            ids, labels = obj.mask_query({"input_ids": tok.encode(q, add_special_tokens=False),
                                          "word_ids": tok.word_ids(q, add_special_tokens=False)})
            masked = [i for i, y in enumerate(labels) if y != IGNORE]
            assert masked and all(ids[i] == tok.mask_token_id for i in masked)
            span = tok.decode([labels[i] for i in masked])
            seen.add(span.replace(" ##", ""))
            assert masked == list(range(masked[0], masked[-1] + 1))  # one contiguous span
    allowed = {"1815", "Duke of Wellington", "Brussels", "Super Bowl 50", "Denver Broncos", "Warsaw", "Paris"}
    assert seen <= allowed and len(seen) >= 5, seen


def test_uncased_tokenizer_is_refused(setup):
    tmp, _ = setup
    (tmp / "u.txt").write_text("\n".join(DOCS) + "\n")
    low = plmkit.train_tokenizer([tmp / "u.txt"], kind="wordpiece", vocab_size=200)
    model = _model(low)
    with pytest.raises(UserError, match="lowercases"):
        _obj(tmp, low).prepare(model)


def test_marginal_nll_formula():
    s = torch.tensor([[1.0, -0.5, 0.2]])
    lp = torch.tensor([[-3.0, -1.0, -7.0]])
    p = torch.softmax(s, -1)
    want = -math.log(sum(float(p[0, i]) * math.exp(float(lp[0, i])) for i in range(3)))
    assert float(marginal_nll(s, lp)[0]) == pytest.approx(want, rel=1e-6)


def _brute_force(obj: REALM, model, batch) -> float:
    """-mean log p(y|x) with p(z|x) a softmax over ALL documents + the null one, each pair run alone."""
    r = model.heads["realm_retriever"]
    b_id, e_id = obj.vocab.begin, obj.vocab.end
    docs = [list(d) for d in obj.index.docs] + [[]]
    total = 0.0
    for b in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][b].sum())
        q = batch["input_ids"][b, :n]
        y = batch["labels"][b, :n]
        qe = r.embed_queries(q[None], torch.ones(1, n, dtype=torch.long))[0].double()
        scores, lps = [], []
        for d in docs:
            dd = torch.tensor([b_id] + d + [e_id])[None]
            de = r.embed_docs(dd, torch.ones_like(dd))[0].double()
            scores.append(float(qe @ de))
            x = torch.cat([q, torch.tensor(d + [e_id], dtype=torch.long)])[None]
            tt = torch.tensor([0] * n + [1] * (len(d) + 1))[None]
            logits = model(x, token_type_ids=tt).logits[0].double()  # (T, V), every position
            lp = 0.0
            for i in range(n):
                if int(y[i]) != IGNORE:
                    lp += float(torch.log_softmax(logits[i], -1)[int(y[i])])
            lps.append(lp)
        m = max(scores)
        w = [math.exp(s - m) for s in scores]
        p_y = sum(wi / sum(w) * math.exp(lp) for wi, lp in zip(w, lps))
        total += -math.log(p_y)
    return total / batch["input_ids"].shape[0]


def test_marginal_likelihood_equals_brute_force_over_all_documents(setup):
    tmp, tok = setup
    model = _model(tok)
    obj = _obj(tmp, tok, k=len(DOCS), null_document=True)
    obj.prepare(model)
    model.eval()
    torch.manual_seed(3)
    batch = obj.make_batch([{"input_ids": tok.encode(q, add_special_tokens=False),
                             "word_ids": tok.word_ids(q, add_special_tokens=False)} for q in QUERIES])
    with torch.no_grad():
        loss, metrics = obj.loss(model, batch)
        want = _brute_force(obj, model, batch)
    assert float(loss) == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert 0.0 < metrics["null_doc_weight"] < 1.0


def test_gradient_reaches_both_retriever_encoders(setup):
    tmp, tok = setup
    model = _model(tok)
    obj = _obj(tmp, tok, k=2)
    obj.prepare(model)
    model.train()
    batch = obj.make_batch([tok.encode(q) for q in QUERIES])
    loss, _ = obj.loss(model, batch)
    loss.backward()
    r = model.heads["realm_retriever"]
    for part in (r.query_encoder, r.doc_encoder, r.query_proj, r.doc_proj):
        g = sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
        assert g > 0, type(part).__name__
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.layers.parameters())


def test_index_refreshes_every_n_training_batches(setup):
    tmp, tok = setup
    model = _model(tok)
    obj = _obj(tmp, tok, k=2, refresh_every=3)
    obj.prepare(model)
    model.train()
    r = model.heads["realm_retriever"]
    opt = torch.optim.SGD(r.parameters(), lr=0.5)
    batch = obj.make_batch([tok.encode(q) for q in QUERIES])
    history = []
    for step in range(7):
        loss, m = obj.loss(model, batch)
        history.append((obj.index.refreshes, obj.index.embeddings.clone()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert [h[0] for h in history] == [1, 1, 1, 2, 2, 2, 3]
    assert torch.equal(history[0][1], history[2][1])  # stale between refreshes
    assert not torch.allclose(history[2][1], history[3][1])  # rebuilt after the retriever moved
    # a refresh equals embedding every document now, one by one
    with torch.no_grad():
        model.eval()
        obj.index.refresh(r)
        for i in range(len(DOCS)):
            d = torch.tensor(obj.index.encoder_input(i))[None]
            assert torch.allclose(obj.index.embeddings[i], r.embed_docs(d, torch.ones_like(d))[0], atol=1e-5)


def test_options_are_checked(setup):
    tmp, tok = setup
    with pytest.raises(UserError, match="corpus is required"):
        build("realm", tokenizer=tok)
    with pytest.raises(UserError, match="k must be an integer >= 0"):
        _obj(tmp, tok, k=-1)
    with pytest.raises(UserError, match="null_document must be true"):
        _obj(tmp, tok, k=0, null_document=False)
    with pytest.raises(UserError, match="no such file"):
        build("realm", tokenizer=tok, corpus=str(tmp / "missing.txt")).prepare(_model(tok))


def test_pretrain_recipe_runs_and_learns(setup, tmp_path):
    from plmkit.pipelines import run_pretraining

    tmp, tok = setup
    tok.save(tmp / "tok")
    (tmp / "q.txt").write_text("\n".join(QUERIES * 20) + "\n")
    r = {"model": {"preset": "bert-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                       "intermediate_size": 64}},
         "tokenizer": {"path": str(tmp / "tok")},
         "data": {"train": [str(tmp / "q.txt")], "seq_len": 24},
         "objective": {"name": "realm", "corpus": "corpus.txt", "k": 2, "refresh_every": 4, "dim": 16},
         "train": {"max_steps": 8, "batch_size": 4, "lr": 3e-3, "schedule": "constant", "warmup_steps": 0,
                   "log_every": 1, "eval_every": 0, "save_every": 0, "tensorboard": False, "plots": False,
                   "num_threads": 1}}
    p = tmp / "realm.yaml"
    p.write_text(yaml.safe_dump(r))  # corpus.txt is relative to the recipe's folder
    s = run_pretraining(p, tmp_path / "run", progress=False, log=lambda m: None)
    assert s["step"] == 8
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["index_refreshes"] == 2.0 and all(math.isfinite(x["loss"]) for x in rows)
    assert (tmp_path / "run" / "final").is_dir()


def test_trivial_document_is_excluded(setup):
    tmp, tok = setup
    model = _model(tok)
    obj = _obj(tmp, tok, k=len(DOCS) - 1)
    obj.prepare(model)
    model.eval()
    batch = obj.make_batch([tok.encode(DOCS[3])])  # the query is document 3 itself
    obj.index.refresh(obj.retriever)
    with torch.no_grad():
        q = obj.retriever.embed_queries(batch["input_ids"], batch["attention_mask"])
        orig = torch.where(batch["labels"] != IGNORE, batch["labels"], batch["input_ids"])[0, 1:-1].tolist()
        cand, _ = obj.candidates(q, [orig])
        assert 3 not in cand[0] and sorted(cand[0][:-1]) == [0, 1, 2, 4] and cand[0][-1] == -1
        obj.config.k = len(DOCS)
        cand, _ = obj.candidates(q, None)
        assert 3 in cand[0]


def test_k0_is_the_null_document_alone(setup):
    """k=0 (the no-retrieval arm) scores -log p(y | [CLS] q [SEP] [SEP]), computed here by hand."""
    tmp, tok = setup
    model = _model(tok)
    obj = _obj(tmp, tok, k=0)
    obj.prepare(model)
    assert "realm_retriever" not in model.heads
    model.eval()
    batch = obj.make_batch([tok.encode(q) for q in QUERIES])
    with torch.no_grad():
        loss, _ = obj.loss(model, batch)
        want = 0.0
        for b in range(len(QUERIES)):
            n = int(batch["attention_mask"][b].sum())
            x = torch.cat([batch["input_ids"][b, :n], torch.tensor([tok.sep_token_id])])[None]
            tt = torch.tensor([[0] * n + [1]])
            lsm = torch.log_softmax(model(x, token_type_ids=tt).logits[0].double(), -1)
            want -= sum(float(lsm[i, int(y)]) for i, y in enumerate(batch["labels"][b, :n]) if int(y) != IGNORE)
    assert float(loss) == pytest.approx(want / len(QUERIES), rel=1e-4)
