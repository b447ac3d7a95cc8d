"""seq_autoencoder (Dai & Le 2015): the decoder is teacher-forced from the encoder's final state, checked against
an explicit torch LSTM computation (encoder and decoder run separately, gate by gate); the reconstruction loss falls
on a tiny batch; only recurrent LMs are accepted."""

from __future__ import annotations

import math

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build


def test_batch_layout(tok):
    obj = build("seq_autoencoder", tokenizer=tok)
    sep = tok.sep_token_id  # wordpiece: no eos, sep starts the decoder
    b = obj.make_batch([{"input_ids": [10, 11, 12]}, {"input_ids": [20, 21]}])
    assert b["input_ids"][0].tolist() == [10, 11, 12, sep, 10, 11]
    assert b["labels"][0].tolist() == [-100, -100, -100, 10, 11, 12]
    assert b["input_ids"][1].tolist()[:4] == [20, 21, sep, 20]
    assert b["labels"][1].tolist() == [-100, -100, 20, 21, -100, -100]
    assert b["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0]
    # truncation applies to the sentence before the copy
    b = build("seq_autoencoder", tokenizer=tok, max_length=4).make_batch([{"input_ids": list(range(30, 40))}])
    assert b["labels"][0].tolist() == [-100] * 4 + [30, 31, 32, 33]


def _lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step written out (PyTorch's gate order i, f, g, o)."""
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_decoder_is_teacher_forced_from_the_encoder_state(bpe_tok):
    tok = bpe_tok
    torch.manual_seed(0)
    model = plmkit.load("lstm-tiny", vocab_size=len(tok), num_layers=2).eval()
    obj = build("seq_autoencoder", tokenizer=tok)
    obj.prepare(model)
    sents = [tok.encode(s, add_special_tokens=False) for s in ("The cat sat on the mat.", "Rain fell.")]
    batch = obj.make_batch([{"input_ids": s} for s in sents])
    with torch.no_grad():
        loss, metrics = obj.loss(model, batch)

    # explicit: encoder over x (state from zeros), then decoder steps from the encoder's final (h, c) of each layer
    E = model.embed.weight
    params = [(m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0) for m in model.layers]
    H = model.config.hidden_size
    total, count = 0.0, 0
    for s in sents:
        state = [(torch.zeros(H), torch.zeros(H)) for _ in params]

        def step(token, state):
            x = E[token]
            new = []
            for p, (h, c) in zip(params, state):
                h, c = _lstm_step(x, h, c, *p)
                new.append((h, c))
                x = h
            return x, new

        for t in s:  # encoder
            _, state = step(t, state)
        prev = obj.sep_id
        for t in s:  # decoder: reads the previous gold token, predicts the next one
            top, state = step(prev, state)
            logp = torch.log_softmax(model.head_logits(top), -1)
            total += -float(logp[t].detach())
            count += 1
            prev = t
    assert metrics["sa_tokens"] == count == sum(len(s) for s in sents)
    assert abs(float(loss) - total / count) < 1e-5
    assert abs(metrics["sa_ppl"] - math.exp(total / count)) < 1e-2 * math.exp(total / count)


def test_reconstruction_loss_falls(bpe_tok):
    tok = bpe_tok
    torch.manual_seed(0)
    model = plmkit.load("lstm-tiny", vocab_size=len(tok), hidden_size=128, embedding_size=128, num_layers=1,
                        tie_word_embeddings=False)
    obj = build("seq_autoencoder", tokenizer=tok)
    obj.prepare(model)
    lines = ["the cat sat on the mat", "a dog ran in the park", "rain fell over the hills", "we read a good book"]
    batch = obj.make_batch([{"input_ids": tok.encode(s, add_special_tokens=False)} for s in lines])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss, _ = obj.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 < 3.0 < losses[0], losses[::10]  # the 4 sentences are reconstructed from the state


def test_needs_a_recurrent_lm(bpe_tok):
    obj = build("seq_autoencoder", tokenizer=bpe_tok)
    with pytest.raises(UserError, match="RNN or LSTM"):
        obj.prepare(plmkit.load("gpt2-tiny", vocab_size=len(bpe_tok)))
