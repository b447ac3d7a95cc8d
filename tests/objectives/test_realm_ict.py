"""The Inverse Cloze Task (plmkit.objectives.realm_ict): query / context construction by hand, the in-batch loss
against an unbatched hand computation, the 0.9 removal rate, and the warm-up carried into REALM's retriever
(``retriever: DIR``, ``dim: null``) through ``plm pretrain``."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build
from plmkit.objectives.realm_ict import ict_pair, sentence_spans

DOCS = [
    "The Duke of Wellington won at Waterloo . He was British . The battle ended the war .",
    "Paris is the capital of France . It is large . The river Seine flows through it .",
    "Marie Curie was born in Warsaw . She moved to Paris . She won two prizes .",
    "The Denver Broncos won Super Bowl 50 . The game was in February . It was played in California .",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ict")
    (tmp / "c.txt").write_text("\n".join(DOCS * 3) + "\n")
    return plmkit.train_tokenizer([tmp / "c.txt"], kind="wordpiece", vocab_size=200, lowercase=False)


def _record(tok, text):
    """A token-store document record: ids without specials, sentence starts at the tokens after each ' . '."""
    ids = tok.encode(text, add_special_tokens=False)
    dot = tok.convert_tokens_to_ids(".")
    starts = [0] + [i + 1 for i, t in enumerate(ids[:-1]) if t == dot]
    return {"input_ids": ids, "sentence_starts": starts}


def _model(tok, seed=0):
    torch.manual_seed(seed)
    return plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2,
                       intermediate_size=64, hidden_dropout=0.0, attention_dropout=0.0,
                       mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id)


def test_sentence_spans_and_pairs_by_hand():
    assert sentence_spans(10, [0, 4, 7]) == [(0, 4), (4, 7), (7, 10)]
    assert sentence_spans(10, [4, 7, 12]) == [(0, 4), (4, 7), (7, 10)]  # 0 implied, out-of-range dropped
    assert sentence_spans(5, None) == [(0, 5)]
    ids = list(range(100, 110))
    spans = [(0, 4), (4, 7), (7, 10)]
    assert ict_pair(ids, spans, 1, True, 20) == ([104, 105, 106], [100, 101, 102, 103, 107, 108, 109])
    assert ict_pair(ids, spans, 1, False, 20) == ([104, 105, 106], ids)
    # a window of 4 centred where the sentence was (position 4 of the 7 remaining tokens): rest[2:6]
    assert ict_pair(ids, spans, 1, True, 4) == ([104, 105, 106], [102, 103, 107, 108])
    # kept: centred on the sentence's middle (5) -> ids[3:7]; at the end the window shifts inside the document
    assert ict_pair(ids, spans, 1, False, 4) == ([104, 105, 106], [103, 104, 105, 106])
    assert ict_pair(ids, spans, 2, True, 4) == ([107, 108, 109], [103, 104, 105, 106])


def _pool_alone(model, ids, pooling):
    """Pooled last hidden state of ONE unpadded sequence, computed by hand."""
    h = model(torch.tensor([ids]), labels_mask=torch.zeros(1, len(ids), dtype=torch.bool)).last_hidden_state[0]
    return h[0] if pooling == "cls" else h.mean(0)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_loss_equals_a_hand_computation(tok, pooling):
    model = _model(tok)
    model.eval()
    obj = build("ict", tokenizer=tok, remove_prob=1.0, pooling=pooling, query_len=16, context_len=20)
    obj.prepare(model)
    records = [_record(tok, d) for d in DOCS]
    torch.manual_seed(5)
    batch = obj.make_batch(records)
    with torch.no_grad():
        loss, m = obj.loss(model, batch)
    # the same draws again, and the loss built from unbatched forward passes and explicit sums
    torch.manual_seed(5)
    qs, cs = [], []
    for r in records:
        ids, st = r["input_ids"], r["sentence_starts"]
        spans = list(zip(st, st[1:] + [len(ids)]))
        i = int(torch.randint(len(spans), (1,)))
        assert bool(torch.rand(()) < 1.0)
        s, e = spans[i]
        rest = ids[:s] + ids[e:]
        lo = max(0, min(s - 9, len(rest) - 18)) if len(rest) > 18 else 0
        qs.append([tok.cls_token_id] + ids[s:e][:14] + [tok.sep_token_id])
        cs.append([tok.cls_token_id] + rest[lo: lo + 18] + [tok.sep_token_id])
        assert not any(ids[s:e] == rest[j: j + e - s] for j in range(len(rest)))  # the sentence is gone
    with torch.no_grad():
        q = [_pool_alone(model, x, pooling) for x in qs]
        c = [_pool_alone(model, x, pooling) for x in cs]
    total, hits = 0.0, 0
    for b in range(len(q)):
        s = [float(q[b] @ c[j]) for j in range(len(c))]
        top = max(s)
        total += -(s[b] - top - math.log(sum(math.exp(v - top) for v in s)))
        hits += int(s.index(top) == b)
    assert float(loss) == pytest.approx(total / len(q), rel=1e-4, abs=1e-5)
    assert m["ict_acc"] == pytest.approx(hits / len(q)) and m["ict_batch"] == len(DOCS)


def test_removal_rate_and_short_documents(tok):
    obj = build("ict", tokenizer=tok, remove_prob=0.9, context_len=64)
    rec = _record(tok, DOCS[0])
    torch.manual_seed(0)
    kept = 0
    n = 2000
    for _ in range(n):
        b = obj.make_batch([rec])
        q = b["query_ids"][0][b["query_mask"][0].bool()].tolist()[1:-1]
        c = b["context_ids"][0][b["context_mask"][0].bool()].tolist()
        kept += any(c[j: j + len(q)] == q for j in range(len(c)))
    assert abs(kept / n - 0.1) < 0.025  # binomial sd 0.0067
    keep_all = build("ict", tokenizer=tok, remove_prob=0.0)
    b = keep_all.make_batch([rec])
    assert b["context_mask"][0].sum() == len(rec["input_ids"]) + 2
    # a one-sentence document has no context: dropped; a batch left with < 2 gives a zero loss
    one = {"input_ids": tok.encode("Paris is big", add_special_tokens=False), "sentence_starts": [0]}
    b = obj.make_batch([one, rec])
    assert b["query_ids"].shape[0] == 1
    model = _model(tok)
    loss, m = obj.loss(model, b)
    assert float(loss.detach()) == 0.0 and m["ict_batch"] == 1.0
    loss.backward()  # still part of the graph (the trainer calls backward on it)


def test_options_are_checked(tok):
    with pytest.raises(UserError, match="remove_prob must be a number in"):
        build("ict", tokenizer=tok, remove_prob=1.5)
    with pytest.raises(UserError, match="pooling"):
        build("ict", tokenizer=tok, pooling="max")
    with pytest.raises(UserError, match="query_len must be >= 3"):
        build("ict", tokenizer=tok, query_len=2)
    gpt = plmkit.load("gpt2", vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2,
                      max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    with pytest.raises(UserError, match="bidirectional encoder"):
        build("ict", tokenizer=tok).prepare(gpt)


def test_warm_up_trains_and_initialises_realm_retriever(tok, tmp_path):
    """plm pretrain with ict learns (in-batch accuracy up), and REALM with retriever=that run and dim=null
    starts with both encoders equal to the warmed-up one and identity projections."""
    from plmkit.pipelines import run_pretraining

    tok.save(tmp_path / "tok")
    (tmp_path / "docs.txt").write_text("\n".join(DOCS * 8) + "\n")
    r = {"model": {"preset": "bert-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                       "intermediate_size": 64}},
         "tokenizer": {"path": str(tmp_path / "tok")},
         "data": {"train": [str(tmp_path / "docs.txt")], "seq_len": 40},
         "objective": {"name": "ict", "remove_prob": 0.9, "query_len": 16, "context_len": 32},
         "train": {"max_steps": 40, "batch_size": 4, "lr": 3e-3, "schedule": "constant", "warmup_steps": 0,
                   "seed": 1, "log_every": 1, "eval_every": 0, "save_every": 0, "tensorboard": False,
                   "plots": False, "num_threads": 1}}
    p = tmp_path / "ict.yaml"
    p.write_text(yaml.safe_dump(r))
    s = run_pretraining(p, tmp_path / "run", progress=False, log=lambda m: None)
    assert s["step"] == 40
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = sum(x["ict_loss"] for x in rows[:10]) / 10
    last = sum(x["ict_loss"] for x in rows[-10:]) / 10
    assert last < first and all(math.isfinite(x["ict_loss"]) for x in rows)

    ict_model = plmkit.load(str(tmp_path / "run" / "final"))
    (tmp_path / "corpus.txt").write_text("\n".join(DOCS) + "\n")
    realm = build("realm", tokenizer=tok, corpus=str(tmp_path / "corpus.txt"), k=2, dim=None, pooling="mean",
                  retriever=str(tmp_path / "run" / "final"))
    reader = _model(tok)
    realm.prepare(reader)
    ret = reader.heads["realm_retriever"]
    want = dict(ict_model.named_parameters())
    for enc in (ret.query_encoder, ret.doc_encoder):
        for name, prm in enc.named_parameters():
            assert torch.equal(prm, want[name]), name
    for proj in (ret.query_proj, ret.doc_proj):
        assert torch.equal(proj.weight, torch.eye(32)) and not proj.bias.any()
    ids = torch.tensor([tok.encode(DOCS[1])])
    with torch.no_grad():
        ict_model.eval()
        ret.eval()
        assert torch.allclose(ret.embed_docs(ids, torch.ones_like(ids)), _pool_alone(ict_model, ids[0].tolist(), "mean")[None],
                              atol=1e-5)
    with pytest.raises(UserError, match="dim must be"):
        build("realm", tokenizer=tok, corpus=str(tmp_path / "corpus.txt"), dim=0)
