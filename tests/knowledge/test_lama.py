"""LAMA probing: ranks and metrics equal a brute-force computation; layers, UHN, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.errors import UserError
from plmkit.knowledge import lama
from plmkit.knowledge.lama_data import Fact, load_lama
from plmkit.knowledge.structure import locate


def brute_candidates(tok, vocab_size, lead):
    special = set(tok.all_special_ids)
    out = set()
    for v in range(len(tok)):
        text = tok.decode([v]).strip()
        if v not in special and text and tok.encode(lead + text, add_special_tokens=False) == [v]:
            out.add(v)
    return out


def brute_rank(model, tok, fact: Fact, objects):
    """(mode, rank) of one fact by plain unbatched forwards, independent of plmkit.knowledge."""
    lead = " " if fact.template[fact.template.index("[Y]") - 1: fact.template.index("[Y]")] == " " else ""
    cands = brute_candidates(tok, model.config.vocab_size, lead)
    gold = tok.encode(lead + fact.obj, add_special_tokens=False)
    if model.config.head == "mlm":
        if len(gold) != 1 or gold[0] not in cands:
            return None, None
        text = fact.template.replace("[X]", fact.subject).replace("[Y]", tok.convert_ids_to_tokens(tok.mask_token_id))
        ids = tok.encode(text)
        with torch.no_grad():
            lp = model(torch.tensor([ids])).logits[0, ids.index(tok.mask_token_id)].log_softmax(-1)
        return "mask", 1 + sum(float(lp[v]) > float(lp[gold[0]]) for v in cands)
    prefix, suffix = fact.template.split("[Y]")
    prefix = prefix.replace("[X]", fact.subject).rstrip(" ")
    suffix = suffix.replace("[X]", fact.subject)
    plain = tok.encode("a", add_special_tokens=False)
    front = tok.encode("a")[: tok.encode("a").index(plain[0])]  # BOS-like specials only, never a trailing EOS
    pids = front + tok.encode(prefix, add_special_tokens=False)
    if len(gold) == 1 and gold[0] in cands and suffix.strip() in ("", "."):
        with torch.no_grad():
            lp = model(torch.tensor([pids])).logits[0, -1].log_softmax(-1)
        return "next_token", 1 + sum(float(lp[v]) > float(lp[gold[0]]) for v in cands)
    scores = []
    for c in objects:
        ids = front + tok.encode(prefix + lead + c + suffix, add_special_tokens=False)
        assert ids[: len(pids)] == pids
        with torch.no_grad():
            lp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        scores.append(sum(float(lp[t - 1, ids[t]]) for t in range(len(pids), len(ids))) / (len(ids) - len(pids)))
    g = objects.index(fact.obj)
    return "candidates", 1 + sum(s > scores[g] for s in scores)


@pytest.mark.parametrize("name,tokname", [("bert", "wordpiece_tok"), ("gpt2", "bpe_tok"), ("llama", "bpe_tok")])
def test_ranks_and_p_at_1_equal_brute_force(name, tokname, request, lama_dir):
    model, tok = request.getfixturevalue(name), request.getfixturevalue(tokname)
    rels = load_lama(lama_dir)
    metrics, records = lama.probe_lama(locate(model), tok, rels, batch_size=3)
    by_uuid = {r["uuid"]: r for r in records}
    assert len(records) == sum(len(r.facts) for r in rels)
    modes = set()
    for rel in rels:
        hits = []
        for f in rel.facts:
            mode, rank = brute_rank(model, tok, f, rel.objects)
            rec = by_uuid[f.uuid]
            assert rec["mode"] == mode, (f, rec)
            modes.add(mode)
            if mode is None:
                assert rec["skipped"]
                continue
            assert rec["rank"] == rank, (f, rec)
            assert len(rec["top10"]) == min(10, len(rec["top10"])) and rec["top10"]
            hits.append(rank == 1)
        m = metrics["relations"][rel.relation]
        assert m["n_facts"] == len(hits) and m["n_skipped"] == len(rel.facts) - len(hits)
        assert m["p_at_1"] == (sum(hits) / len(hits) if hits else None)
    if name == "bert":
        assert modes >= {"mask", None}  # multi-token objects are skipped, never dropped
    else:
        assert modes == {"next_token", "candidates"}
    overall = metrics["overall"]
    per_rel = [m["p_at_1"] for m in metrics["relations"].values() if m["n_facts"]]
    assert overall["p_at_1"] == pytest.approx(sum(per_rel) / len(per_rel))
    assert set(metrics) == {"sources", "relations", "overall"}
    assert set(metrics["sources"]) == {"trex", "google-re", "squad"}


@pytest.mark.parametrize("name,tokname", [("bert", "wordpiece_tok"), ("llama", "bpe_tok")])
def test_layer_readout(name, tokname, request, lama_dir):
    """The last layer reproduces the plain probe; an inner layer equals a brute-force readout."""
    model, tok = request.getfixturevalue(name), request.getfixturevalue(tokname)
    s = locate(model)
    rels = load_lama(lama_dir, ["trex"], ["P17"])
    plain, _ = lama.probe_lama(s, tok, rels)
    metrics, records = lama.probe_lama(s, tok, rels, layers=True)
    assert len(metrics["layers"]) == s.num_layers + 1
    assert metrics["layers"][-1] == metrics["layers_same_facts_p_at_1"]
    if name == "bert":  # every probed MLM fact is a mask fact
        assert metrics["layers"][-1] == plain["overall"]["p_at_1"]
    else:
        assert metrics["layers_n_facts"] == sum(m["n_next_token"] for m in metrics["relations"].values())
    rec = next(r for r in records if r["mode"] in ("mask", "next_token"))
    fact = next(f for f in rels[0].facts if f.uuid == rec["uuid"])
    # layer 1 by hand: output of block 0, then final norm + head
    ids = tok.encode(rec["prompt"]) if rec["mode"] == "mask" else [0] + tok.encode(rec["prompt"], add_special_tokens=False)
    pos = ids.index(tok.mask_token_id) if rec["mode"] == "mask" else len(ids) - 1
    grabbed = {}
    h = s.layers[0].register_forward_hook(lambda m, a, o: grabbed.setdefault("h", o))
    with torch.no_grad():
        model(torch.tensor([ids]))
        h.remove()
        x = grabbed["h"][0, pos]
        x = s.final_norm(x) if s.final_norm is not None else x
        lp = s.head(x).log_softmax(-1)
    cands = brute_candidates(tok, model.config.vocab_size, " ")
    gold = tok.encode(" " + fact.obj, add_special_tokens=False)[0]
    assert rec["layer_ranks"][1] == 1 + sum(float(lp[v]) > float(lp[gold]) for v in cands)


def test_uhn_filters(gpt2, bpe_tok, lama_dir):
    assert not lama.uhn_string_filter(Fact("trex", "P17", "Parisville", "Paris", "[X] is located in [Y] .", "u"))
    assert lama.uhn_string_filter(Fact("trex", "P17", "Paris", "France", "[X] is located in [Y] .", "u"))
    rels = load_lama(lama_dir, ["trex"])
    metrics, records = lama.probe_lama(locate(gpt2), bpe_tok, rels, uhn=True)
    removed = [r for r in records if not r["uhn_kept"]]
    assert any(r["subject"] == "Parisville" for r in removed)
    assert metrics["uhn"]["n_removed"] == len(removed)
    assert metrics["uhn"]["overall"]["n_facts"] == metrics["overall"]["n_facts"] - len(removed)
    # the name filter only looks at person relations and removes facts whose object the name alone predicts
    s = locate(gpt2)
    vocab = lama.CandidateVocab(bpe_tok, gpt2.config.vocab_size)
    qs = lama.prepare(s, bpe_tok, rels[1], vocab)  # P103: person relation
    keep = lama.uhn_name_filter(s, bpe_tok, qs, vocab)
    for q, k in zip(qs, keep):
        ranks = []
        for part in q.fact.subject.split():
            ids = [0] + bpe_tok.encode(f"{part} is a common name in the following language:", add_special_tokens=False)
            assert bpe_tok.convert_ids_to_tokens(0) == "<s>"
            with torch.no_grad():
                lp = gpt2(torch.tensor([ids])).logits[0, -1]
            gold = bpe_tok.encode(" " + q.fact.obj, add_special_tokens=False)[0]
            cands = brute_candidates(bpe_tok, gpt2.config.vocab_size, " ")
            ranks.append(1 + sum(float(lp[v]) > float(lp[gold]) for v in cands))
        assert k == (min(ranks) > 3)


def test_data_errors(lama_dir, tmp_path):
    with pytest.raises(UserError, match="unknown relation 'P999'"):
        load_lama(lama_dir, relations=["P999"])
    with pytest.raises(UserError, match="unknown LAMA source"):
        load_lama(lama_dir, sources=["conceptnet"])
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(lama_dir, bad)
    (bad / "relations.jsonl").write_text(json.dumps({"relation": "P17", "template": "[X] is located in ."}) + "\n")
    with pytest.raises(UserError, match=r"relations.jsonl:1: template .* exactly one \[X\] and one \[Y\]"):
        load_lama(bad, ["trex"], ["P17"])
    (bad / "relations.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="relations.jsonl:1: not valid JSON"):
        load_lama(bad, ["trex"])
    rows = load_lama(lama_dir, ["trex"], ["P17"], max_facts=2)
    assert len(rows[0].facts) == 2 and len(rows[0].objects) == 7  # candidates come from the whole file


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_shared_prefix_candidate_scores_equal_full_forwards(name, request, bpe_tok, lama_dir):
    """Candidate mode: prefix forward + continuations on its KV cache == one full forward per sentence."""
    model = request.getfixturevalue(name)
    s = locate(model)
    vocab = lama.CandidateVocab(bpe_tok, model.config.vocab_size)
    rels = load_lama(lama_dir, ["trex"])
    for r in rels:  # objects of several token lengths, so continuations differ in length
        r.objects = r.objects + ["Parisville Germanyland", "the big old country of Rome"]
    runs = []
    for share in (True, False):
        qs = [q for r in rels for q in lama.prepare(s, bpe_tok, r, vocab)]
        lama.score(s, bpe_tok, qs, vocab, batch_size=3, share_prefix=share)
        runs.append([q for q in qs if q.mode == "candidates"])
    assert len(runs[0]) >= 3
    lengths = {len(ids) - st for q in runs[0] for ids, st in zip(q.cand_ids, q.cand_start)}
    assert len(lengths) > 1  # continuations of different lengths share a padded batch
    for a, b in zip(*runs):
        assert a.result["rank"] == b.result["rank"]
        assert a.result["gold_score"] == pytest.approx(b.result["gold_score"], abs=1e-5)
        assert [i for i, _ in a.result["top10"]] == [i for i, _ in b.result["top10"]]
        for (_, x), (_, y) in zip(a.result["top10"], b.result["top10"]):
            assert x == pytest.approx(y, abs=1e-5)
