"""LAMA on encoder-decoders (T5 sentinel, BART mask): ranks equal a brute-force computation;
scores equal transformers' on a tiny random HF T5; the other knowledge methods refuse with a reason."""

from __future__ import annotations

import pytest
import torch

from plmkit.errors import UserError
from plmkit.knowledge import lama
from plmkit.knowledge.lama_data import load_lama
from plmkit.knowledge.structure import locate


def _lp(model, enc, dec):
    with torch.no_grad():
        return model(torch.tensor([enc]), decoder_input_ids=torch.tensor([dec])).logits[0].float().log_softmax(-1)


def brute_rank(model, tok, fact, objects):
    """(mode, rank) by plain unbatched forwards, written from the conventions in lama_seq2seq."""
    fam = model.config.family
    i = fact.template.index("[Y]")
    lead = " " if i > 0 and fact.template[i - 1] == " " else ""
    olead = "" if fam == "t5" else lead
    special = set(tok.all_special_ids)
    cands = {v for v in range(len(tok)) if v not in special and tok.decode([v]).strip()
             and tok.encode(olead + tok.decode([v]).strip(), add_special_tokens=False) == [v]}
    gold = tok.encode(olead + fact.obj, add_special_tokens=False)
    start = model.config.decoder_start_token_id
    if fam == "t5":
        s0, s1 = tok.sentinel_token_ids[:2]
        blank = "<extra_id_0>"
        dec_prefix = [start, s0]
    else:
        blank = "<mask>"
        prefix = fact.template[:i].replace("[X]", fact.subject)
        prefix = prefix[:-1] if lead else prefix
        dec_prefix = [start] + tok.encode(prefix, add_special_tokens=True)[:-1]  # <s> prefix (no </s>)
    enc = tok.encode(fact.template.replace("[X]", fact.subject).replace("[Y]", blank))
    if len(gold) == 1 and gold[0] in cands:
        lp = _lp(model, enc, dec_prefix)[-1]
        return "mask", 1 + sum(float(lp[v]) > float(lp[gold[0]]) for v in cands), float(lp[gold[0]])
    scores = []
    for c in objects:
        if fam == "t5":
            dec = dec_prefix + tok.encode(c, add_special_tokens=False) + [s1]
            first = 2
        else:
            suffix = fact.template[i + 3:].replace("[X]", fact.subject)
            dec = [start] + tok.encode(prefix + lead + c + suffix)
            first = len(dec_prefix)
            assert dec[:first] == dec_prefix
        lp = _lp(model, enc, dec[:-1])
        scores.append(sum(float(lp[t - 1, dec[t]]) for t in range(first, len(dec))) / (len(dec) - first))
    g = objects.index(fact.obj)
    return "candidates", 1 + sum(s > scores[g] for s in scores), scores[g]


@pytest.mark.parametrize("name,tokname", [("t5", "unigram_tok"), ("bart", "bpe_tok")])
def test_seq2seq_ranks_equal_brute_force(name, tokname, request, lama_dir):
    model, tok = request.getfixturevalue(name), request.getfixturevalue(tokname)
    s = locate(model, allow_seq2seq=True)
    assert s.kind == "seq2seq"
    rels = load_lama(lama_dir)
    metrics, records = lama.probe_lama(s, tok, rels, batch_size=3, uhn=True, layers=True)
    by_uuid = {r["uuid"]: r for r in records}
    modes = set()
    for rel in rels:
        for f in rel.facts:
            mode, rank, gold = brute_rank(model, tok, f, rel.objects)
            rec = by_uuid[f.uuid]
            assert rec["mode"] == mode, (f, rec)
            assert rec["rank"] == rank, (f, rec)
            assert rec["gold_score"] == pytest.approx(gold, abs=1e-5)
            modes.add(mode)
    assert modes == {"mask", "candidates"}
    assert metrics["overall"]["n_facts"] == len(records)
    assert len(metrics["layers"]) == s.num_layers + 1
    assert metrics["layers"][-1] == metrics["layers_same_facts_p_at_1"]
    assert "uhn" in metrics


def test_t5_scores_equal_transformers(unigram_tok, lama_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    import plmkit

    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=len(unigram_tok), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, dropout_rate=0.0)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.5)
    hf.save_pretrained(tmp_path)
    ours = plmkit.load(tmp_path).eval()
    s = locate(ours, allow_seq2seq=True)
    rels = load_lama(lama_dir, ["trex"])
    vocab = lama.CandidateVocab(unigram_tok, ours.config.vocab_size)
    qs = [q for r in rels for q in lama.prepare(s, unigram_tok, r, vocab)]
    assert {q.mode for q in qs} == {"mask", "candidates"}
    with torch.no_grad():
        lama.score(s, unigram_tok, qs, vocab, batch_size=4)
        for q in qs:
            enc = torch.tensor([q.ids])
            if q.mode == "mask":
                lp = hf(input_ids=enc, decoder_input_ids=torch.tensor([q.dec_ids])).logits[0, -1].log_softmax(-1)
                lp = lp.masked_fill(~vocab.mask(""), float("-inf"))
                ref = lp
            else:
                sc = []
                for ids, st in zip(q.cand_ids, q.cand_start):
                    lp = hf(input_ids=enc, decoder_input_ids=torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
                    sc.append(sum(float(lp[t - 1, ids[t]]) for t in range(st, len(ids))) / (len(ids) - st))
                ref = torch.tensor(sc)
            assert q.result["gold_score"] == pytest.approx(float(ref[q.gold]), abs=1e-4)
            top = ref.topk(len(q.result["top10"]))
            for (i, sc_), v in zip(q.result["top10"], top.values):
                assert sc_ == pytest.approx(float(v), abs=1e-4)


def test_other_methods_refuse_encoder_decoders_with_a_reason(t5):
    with pytest.raises(UserError, match="encoder reads the subject and the decoder writes the object"):
        locate(t5)


def test_cli_probes_t5_and_trace_refuses_it(t5, unigram_tok, lama_dir, tmp_path, capsys):
    import json

    from plmkit.cli.main import main

    d = tmp_path / "t5"
    t5.save_pretrained(d)
    unigram_tok.save(d)
    out = tmp_path / "run"
    assert main(["probe", "lama", "--model", str(d), "--data", str(lama_dir), "--source", "trex", "--uhn",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "seq2seq" and m["overall"]["n_skipped"] == 0 and m["overall"]["n_facts"] == 7 + 3 + 3
    assert sum(r["n_mask"] + r["n_candidates"] for r in m["relations"].values()) == 13
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([{"prompt": "Paris is located in", "subject": "Paris", "attribute": "France"}]))
    capsys.readouterr()
    assert main(["trace", "--model", str(d), "--facts", str(facts), "--out", str(tmp_path / "tr")]) == 2
    err = capsys.readouterr().err
    assert "encoder-decoder" in err and "decoder writes the object" in err and len(err.strip().splitlines()) == 1
