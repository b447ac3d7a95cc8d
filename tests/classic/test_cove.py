"""CoVe's MT-LSTM (plmkit.classic.recurrent.CoVe) and the translation objective: the encoder against explicit
torch.nn.LSTM runs of each direction, padding, attention rows, the teacher-forcing batch, a falling
translation loss, save / load, and the cove recipe through ``plm pretrain``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.classic.recurrent import CoVe, build
from plmkit.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _reference_layer(lstm: torch.nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """One bidirectional layer computed as two unidirectional torch LSTMs: left-to-right on x, and
    left-to-right on reversed x, reversed back (x: (1, T, D), no padding)."""
    H = lstm.hidden_size
    outs = []
    for suffix, seq in (("", x), ("_reverse", x.flip(1))):
        ref = torch.nn.LSTM(x.shape[-1], H, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l0").copy_(getattr(lstm, f"{name}_l0{suffix}"))
        y, _ = ref(seq)
        outs.append(y if not suffix else y.flip(1))
    return torch.cat(outs, -1)


def test_encoder_is_a_bidirectional_lstm_stack():
    m = build("cove-tiny", vocab_size=40).eval()
    H = m.config.hidden_size
    ids = torch.randint(0, 40, (1, 7))
    layers = m.encode(ids)
    assert len(layers) == 2 and all(y.shape == (1, 7, 2 * H) for y in layers)
    x = m.embed(ids)
    for lstm, got in zip(m.encoder, layers):
        want = _reference_layer(lstm, x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        x = want
    out = m(ids)
    assert out.logits is None and torch.equal(out.last_hidden_state, layers[-1])
    # first layer: the backward half at position 0 depends on the last token, the forward half does not
    ids2 = ids.clone()
    ids2[0, -1] = (ids[0, -1] + 1) % 40
    first, first2 = layers[0], m.encode(ids2)[0]
    assert torch.allclose(first2[0, 0, :H], first[0, 0, :H])
    assert not torch.allclose(first2[0, 0, H:], first[0, 0, H:])


def test_padding_is_packed_away():
    m = build("cove-tiny", vocab_size=40).eval()
    a, b = torch.randint(1, 40, (1, 6)), torch.randint(1, 40, (1, 4))
    batch = torch.zeros(2, 6, dtype=torch.long)
    batch[0], batch[1, :4] = a[0], b[0]
    mask = torch.tensor([[1] * 6, [1] * 4 + [0, 0]])
    enc = m(batch, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(enc[1, :4], m(b).last_hidden_state[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc[0], m(a).last_hidden_state[0], atol=1e-5, rtol=1e-5)
    assert float(enc[1, 4:].detach().abs().max()) == 0.0


def test_attention_rows_sum_to_one_over_the_source():
    m = build("cove-tiny", vocab_size=40).eval()
    src = torch.randint(1, 40, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    dec = torch.randint(1, 40, (2, 4))
    out = m(src, attention_mask=mask, decoder_input_ids=dec)
    assert out.logits.shape == (2, 4, 40) and out.attentions.shape == (2, 4, 5)
    torch.testing.assert_close(out.attentions.sum(-1), torch.ones(2, 4))
    assert float(out.attentions[1, :, 3:].detach().abs().max()) == 0.0
    # the attentional state from its definition: tanh(W2 [H^T alpha; h] + b2)
    enc = out.last_hidden_state
    h, _ = m.decoder(m.dec_embed(dec))
    scores = torch.einsum("bsd,bud->bus", enc, m.attn_query(h)).masked_fill(mask[:, None, :] == 0, -1e9)
    alpha = torch.softmax(scores, -1)
    torch.testing.assert_close(out.attentions, alpha, atol=1e-6, rtol=1e-5)
    want = m.output(torch.tanh(m.attn_out(torch.cat([alpha @ enc, h], -1))))
    torch.testing.assert_close(out.logits, want, atol=1e-5, rtol=1e-5)


def _tok(tmp_path):
    corpus = tmp_path / "c.txt"
    words = "one two three four five six seven eight nine ten"
    corpus.write_text((words + "\n" + " ".join(f"z{w}" for w in words.split()) + "\n") * 5)
    return plmkit.train_tokenizer([str(corpus)], kind="wordpiece", vocab_size=120)


def test_translation_batch_and_falling_loss(tmp_path):
    import plmkit.objectives as O

    tok = _tok(tmp_path)
    obj = O.build("translation", tokenizer=tok)
    b = obj.make_batch([([5, 6, 7], [8, 9]), {"src": [5], "tgt": [10, 11, 12]}])
    start, end, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    assert b["input_ids"].tolist() == [[5, 6, 7, end], [5, end, pad, pad]]
    assert b["decoder_input_ids"].tolist() == [[start, 8, 9, pad], [start, 10, 11, 12]]
    assert b["labels"].tolist() == [[8, 9, end, -100], [10, 11, 12, end]]
    with pytest.raises(UserError, match="encoder-decoder"):
        obj.prepare(build("lstm-tiny", vocab_size=len(tok)))
    # a toy "language pair": each word w translates to zw, in the same order
    words = "one two three four five six seven eight nine ten".split()
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(64):
        ws = [words[int(i)] for i in torch.randint(0, 10, (4,), generator=g)]
        pairs.append((tok.encode(" ".join(ws), add_special_tokens=False),
                      tok.encode(" ".join("z" + w for w in ws), add_special_tokens=False)))
    m = build("cove-tiny", vocab_size=len(tok), embedding_size=32, hidden_size=32, pad_token_id=pad)
    obj.prepare(m)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for step in range(80):
        batch = obj.make_batch(pairs[(step * 16) % 64:(step * 16) % 64 + 16])
        loss, metrics = obj.loss(m, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert "mt_loss" in metrics
    assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5, (losses[:5], losses[-5:])  # ~0.01 x in practice


def test_save_and_load(tmp_path):
    m = build("cove-tiny", vocab_size=40).eval()
    m.save_pretrained(tmp_path / "cove")
    m2 = plmkit.load(str(tmp_path / "cove"))
    assert isinstance(m2, CoVe)
    ids = torch.randint(0, 40, (2, 5))
    dec = torch.randint(0, 40, (2, 3))
    torch.testing.assert_close(m2.eval()(ids, decoder_input_ids=dec).logits, m(ids, decoder_input_ids=dec).logits)


def test_recipe_runs_through_pretrain(tmp_path):
    from tests.conftest import data_dir

    if not (data_dir() / "parallel" / "cmn-eng.tsv").is_file():
        pytest.skip("no parallel/cmn-eng.tsv")
    from plmkit.pipelines import run_pretraining

    s = run_pretraining(REPO / "recipes/cove/mt-cmn-eng.yaml", tmp_path / "run", progress=False, log=lambda m: None,
                        overrides=["train.max_steps=4", "train.batch_size=4", "train.eval_every=4", "train.eval_batches=1",
                                   "train.save_every=0", "model.overrides.hidden_size=16",
                                   "model.overrides.embedding_size=16", "tokenizer.train.vocab_size=1000"])
    assert s["step"] == 4 and (tmp_path / "run" / "final").is_dir()
    assert isinstance(plmkit.load(str(tmp_path / "run" / "final")), CoVe)
