"""Word-knowledge graph data: T-REx reading and the fact split, mention linking (whole words, longest label
first), and the frequency baseline of completion, each against a hand-worked example."""

from __future__ import annotations

import json

import pytest

from plmkit.data.wkg import frequency_baseline, link_mentions, read_trex
from plmkit.errors import UserError


def _write(tmp_path, facts):
    d = tmp_path / "TREx"
    d.mkdir(parents=True)
    rows = [json.dumps({"uuid": f"u{i}", "sub_uri": s, "sub_label": sl, "predicate_id": p, "obj_uri": o,
                        "obj_label": ol, "evidences": [{"sub_surface": sl, "obj_surface": ol,
                                                        "masked_sentence": f"{sl} lived in [MASK] ."}]})
            for i, (s, sl, p, o, ol) in enumerate(facts)]
    (d / "P1.jsonl").write_text("\n".join(rows) + "\n")
    return d


FACTS = [("Q1", "Victor Hugo", "P1", "Q9", "Paris"), ("Q2", "Anna", "P1", "Q9", "Paris"),
         ("Q3", "Bob", "P1", "Q8", "New York City"), ("Q4", "Carl", "P1", "Q9", "Paris")]


def test_read_trex_split_and_neighbours(tmp_path):
    kg = read_trex(_write(tmp_path, FACTS), holdout=0.0)
    assert len(kg.train) == 4 and not kg.heldout_facts
    assert kg.relations == ["[MASK]", "P1", "P1^-1"]
    paris = kg.entity_index["Q9"]
    assert sorted(kg.neighbours[paris]) == sorted((2, kg.entity_index[q]) for q in ("Q1", "Q2", "Q4"))
    assert kg.sentences()[0] == "Victor Hugo lived in Paris ."
    held = read_trex(_write(tmp_path / "b", FACTS), holdout=0.5)
    again = read_trex(tmp_path / "b" / "TREx", holdout=0.5)
    assert [f.uuid for f in held.heldout_facts] == [f.uuid for f in again.heldout_facts]  # a pure function of uuid
    assert len(held.train) + len(held.heldout_facts) == 4
    with pytest.raises(UserError, match="holdout"):
        read_trex(tmp_path / "b" / "TREx", holdout=1.0)


def test_link_mentions_whole_words_longest_first(tmp_path):
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    tok = train_tokenizer_from_iterator(["victor hugo met anna in new york city . parisian bob carl paris"] * 20,
                                        kind="wordpiece", vocab_size=120)
    kg = read_trex(_write(tmp_path, FACTS + [("Q5", "New York", "P1", "Q9", "Paris")]), holdout=0.0)
    sents = ["Victor Hugo met Anna in New York City .", "Parisian Bob ."]
    linked = link_mentions(tok, sents, kg)
    ids0 = tok(sents[0], add_special_tokens=False, return_offsets=True)
    spans = [(ids0["offset_mapping"][s][0], ids0["offset_mapping"][e - 1][1], kg.entities[x])
             for s, e, x in linked[0]["mentions"]]
    assert [(sents[0][a:b], q) for a, b, q in spans] == [("Victor Hugo", "Q1"), ("Anna", "Q2"),
                                                         ("New York City", "Q8")]  # not "New York"
    assert [kg.entities[x] for _, _, x in linked[1]["mentions"]] == ["Q3"]  # "Parisian" is not "Paris"


def test_frequency_baseline_by_hand(tmp_path):
    kg = read_trex(_write(tmp_path, FACTS), holdout=0.0)
    e = kg.entity_index
    # object prior of P1: Paris (3) then New York City (1); P1^-1 has no objects (a miss).
    # relation prior of Paris: P1 (3); of New York City: P1 (1); Paris is never an object of P1^-1 (a miss)
    q = [(e["Q1"], 1, e["Q9"]), (e["Q1"], 1, e["Q8"]), (e["Q1"], 2, e["Q9"])]
    b = frequency_baseline(kg, q)
    assert b["object_acc"] == pytest.approx(1 / 3)
    assert b["object_mrr"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert b["relation_acc"] == pytest.approx(2 / 3) and b["relation_mrr"] == pytest.approx((1 + 1 + 0) / 3)
