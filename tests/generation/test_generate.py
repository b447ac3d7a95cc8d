"""Tests for plmkit.generation: cache == no cache, batching with left padding, sampling statistics,
beam search, eos handling, logit processors, streamers, errors."""

from __future__ import annotations

import io

import pytest
import torch

from plmkit.errors import UserError
from plmkit.generation import TextStreamer
from plmkit.generation.logits import repetition_penalty, top_k_filter, top_p_filter
from plmkit.models import load


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    return load("gpt2-tiny", vocab_size=64).eval()


def _prompts(vocab=64):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, :5] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "gpt-tiny"])
def test_cache_equals_no_cache_greedy(name):
    torch.manual_seed(0)
    m = load(name, vocab_size=64).eval()
    ids, mask = _prompts()
    a = m.generate(ids, attention_mask=mask, max_new_tokens=15)
    b = m.generate(ids, attention_mask=mask, max_new_tokens=15, use_cache=False)
    assert a.shape == (3, 22)
    assert torch.equal(a, b)


def test_cache_equals_no_cache_sampling_and_beams(gpt2):
    ids, mask = _prompts()
    kw = dict(attention_mask=mask, max_new_tokens=12, do_sample=True, temperature=1.3, top_k=20, top_p=0.9,
              repetition_penalty=1.2)
    a = gpt2.generate(ids, generator=torch.Generator().manual_seed(5), **kw)
    b = gpt2.generate(ids, generator=torch.Generator().manual_seed(5), use_cache=False, **kw)
    assert torch.equal(a, b)
    a = gpt2.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=3)
    b = gpt2.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=3, use_cache=False)
    assert torch.equal(a, b)


def test_left_padded_rows_decode_as_if_alone(gpt2):
    ids, mask = _prompts()
    batch = gpt2.generate(ids, attention_mask=mask, max_new_tokens=10)
    for r in range(3):
        real = ids[r][mask[r].bool()][None]
        alone = gpt2.generate(real, max_new_tokens=10)
        assert torch.equal(batch[r, 7:], alone[0, real.shape[1]:])


def test_greedy_is_argmax_of_forward(gpt2):
    ids = torch.randint(3, 64, (1, 5))
    out = gpt2.generate(ids, max_new_tokens=4)
    seq = ids
    for _ in range(4):
        nxt = gpt2(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_eos_stops_rows_and_pads(gpt2):
    ids, mask = _prompts()
    free = gpt2.generate(ids, attention_mask=mask, max_new_tokens=10)
    eos = int(free[0, 9])  # the third token the first row produces
    out = gpt2.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=1)
    row = out[0, 7:].tolist()
    first = row.index(eos)
    assert all(t == 1 for t in row[first + 1:])
    assert out.shape[1] <= 17
    # once every row has finished, generation stops early
    single = gpt2.generate(ids[:1], max_new_tokens=10, eos_token_id=eos)
    assert single.shape[1] == 7 + first + 1
    # without eos_token_id the config's EOS stops a row (as transformers does); [] never stops early
    old = gpt2.config.eos_token_id
    try:
        gpt2.config.eos_token_id = eos
        assert torch.equal(gpt2.generate(ids[:1], max_new_tokens=10), single)
        assert torch.equal(gpt2.generate(ids[:1], max_new_tokens=10, eos_token_id=[]), free[:1])
    finally:
        gpt2.config.eos_token_id = old


def test_sampling_follows_the_filtered_distribution(gpt2):
    torch.manual_seed(0)
    ids = torch.randint(3, 64, (1, 6))
    probs = torch.softmax(top_k_filter(gpt2(ids).logits[:, -1] / 0.7, 5), -1)[0]
    n = 4000
    out = gpt2.generate(ids.expand(n, -1), max_new_tokens=1, do_sample=True, temperature=0.7, top_k=5,
                        generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out[:, -1], minlength=64).float() / n
    assert set(out[:, -1].tolist()) <= set(torch.nonzero(probs).flatten().tolist())  # only the top 5
    assert (freq - probs).abs().max() < 0.03  # ~4 sigma for p(1-p)/n at n=4000


def test_top_k_1_and_tiny_top_p_equal_greedy(gpt2):
    ids, mask = _prompts()
    greedy = gpt2.generate(ids, attention_mask=mask, max_new_tokens=6)
    assert torch.equal(gpt2.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, top_k=1), greedy)
    assert torch.equal(gpt2.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, top_p=1e-6), greedy)


def test_beam_search_finds_a_likelier_sequence(gpt2):
    ids = torch.randint(3, 64, (2, 5))

    def logprob(seq):
        lp = gpt2(seq).logits[:, :-1].log_softmax(-1)
        return lp.gather(2, seq[:, 1:, None]).squeeze(2)[:, 4:].sum(1)

    greedy = gpt2.generate(ids, max_new_tokens=6)
    beam = gpt2.generate(ids, max_new_tokens=6, num_beams=4)
    assert beam.shape == greedy.shape
    assert (logprob(beam) >= logprob(greedy) - 1e-5).all()
    assert torch.equal(gpt2.generate(ids, max_new_tokens=6, num_beams=1), greedy)


def test_logit_processors_by_hand():
    s = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    torch.testing.assert_close(repetition_penalty(s, torch.tensor([[0, 1]]), 2.0),
                               torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    assert top_k_filter(s, 2).isinf().tolist() == [[False, True, True, False]]
    p = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert top_p_filter(p, 0.7).isinf().tolist() == [[False, False, True, True]]
    assert top_p_filter(p, 0.75).isinf().tolist() == [[False, False, True, True]]
    assert top_p_filter(p, 0.85).isinf().tolist() == [[False, False, False, True]]  # 0.5 + 0.3 < 0.85


def test_streamer_receives_every_token(gpt2):
    ids = torch.randint(3, 64, (1, 4))
    got = []
    out = gpt2.generate(ids, max_new_tokens=5, streamer=lambda t: got.append(int(t[0])))
    assert got == out[0, 4:].tolist()

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(97 + i % 26) for i in ids)

    buf = io.StringIO()
    out = gpt2.generate(ids, max_new_tokens=5, streamer=TextStreamer(Tok(), out=buf))
    assert buf.getvalue() == Tok().decode(out[0, 4:].tolist()) + "\n"


def test_generate_errors(gpt2):
    with pytest.raises(UserError, match="causal"):
        load("bert-tiny").generate(torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(UserError, match="max_position_embeddings"):
        gpt2.generate(torch.ones(1, 500, dtype=torch.long), max_new_tokens=20)
    with pytest.raises(UserError, match="vocab_size=64"):
        gpt2.generate(torch.tensor([[70]]))
    with pytest.raises(UserError, match="top_p"):
        gpt2.generate(torch.ones(1, 3, dtype=torch.long), do_sample=True, top_p=0.0)
    with pytest.raises(UserError, match="streamer"):
        gpt2.generate(torch.ones(1, 3, dtype=torch.long), num_beams=2, streamer=print)


def test_generate_restores_training_mode():
    m = load("gpt2-tiny")
    m.train()
    m.generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=2)
    assert m.training
