"""prophetnet (future n-gram prediction): per-step weights, the loss against an explicit per-row sum, ngram=1
equal to the corruption objective's loss, training end to end, and greedy decoding of the trained model."""

from __future__ import annotations

import math

import pytest
import torch

from plmkit.errors import UserError
from plmkit.models.prophetnet import ngram_decode
from plmkit.objectives import build
from plmkit.objectives.prophetnet import future_labels, future_weights

from objective_fixtures import windows


def tiny(tok):
    from plmkit.models.seq2seq import EncoderDecoder, Seq2SeqConfig

    return EncoderDecoder(Seq2SeqConfig(vocab_size=len(tok), hidden_size=48, num_layers=2, num_decoder_layers=2,
                                        num_heads=4, intermediate_size=96, type_vocab_size=0, head="lm",
                                        pad_token_id=tok.pad_token_id, hidden_dropout=0.0, attention_dropout=0.0,
                                        family="mass", position="learned", max_position_embeddings=128,
                                        decoder_start_token_id=tok.mask_token_id))


def test_weights_and_future_labels():
    assert future_weights(2) == [0.5, 0.5]
    w = future_weights(3, gamma=0.5)
    assert w == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75])
    assert future_weights(2, alphas=[3, 1]) == [0.75, 0.25]
    y = torch.tensor([[5, 6, 7, -100], [8, 9, -100, -100]])
    assert future_labels(y, 1).tolist() == [[6, 7, -100, -100], [9, -100, -100, -100]]
    assert future_labels(y, 2).tolist() == [[7, -100, -100, -100], [-100, -100, -100, -100]]


def test_bad_options(tok):
    with pytest.raises(UserError, match="ngram"):
        build("prophetnet", tokenizer=tok, ngram=0)
    with pytest.raises(UserError, match="alphas"):
        build("prophetnet", tokenizer=tok, ngram=2, alphas=[1.0])
    with pytest.raises(UserError, match="corruption"):
        build("prophetnet", tokenizer=tok, corruption="t5")
    with pytest.raises(UserError, match="fragment_ratoi"):
        build("prophetnet", tokenizer=tok, corruption_options={"fragment_ratoi": 0.2})


@pytest.mark.parametrize("corruption", ["mass", "bart_denoise"])
def test_loss_is_the_weighted_sum_of_per_step_cross_entropies(tok, wiki_ids, corruption):
    obj = build("prophetnet", tokenizer=tok, ngram=3, gamma=0.6, corruption=corruption)
    model = tiny(tok).eval()
    obj.prepare(model)
    assert model.heads["prophetnet_ngram"].weight.shape == (2, 48)
    batch = obj.make_batch(windows(wiki_ids, tok, T=24, n=4))
    loss, m = obj.loss(model, batch)
    # independent: the plain forward for step 0; stream rows scored one by one for steps 1, 2
    kw = {k: batch[k] for k in ("attention_mask", "decoder_input_ids", "decoder_attention_mask",
                                "decoder_position_ids") if k in batch}
    with torch.no_grad():
        logits0 = model(batch["input_ids"], **kw).logits
        enc, _ = model.encode(batch["input_ids"], batch["attention_mask"])
        _, pred = ngram_decode(model, model.heads["prophetnet_ngram"].weight, enc, batch["attention_mask"],
                               batch["decoder_input_ids"], batch["decoder_attention_mask"],
                               batch.get("decoder_position_ids"))
    labels = batch["labels"]
    ce = []
    for j in range(3):
        terms = []
        for b in range(labels.shape[0]):
            for t in range(labels.shape[1] - j):
                y = int(labels[b, t + j])
                if y == -100:
                    continue
                lg = logits0[b, t] if j == 0 else model.head_logits(pred[b, j - 1, t])
                terms.append(-torch.log_softmax(lg.float(), -1)[y])
        ce.append(torch.stack(terms).mean())
    w = [0.6 ** j for j in range(3)]
    want = sum(wj * c for wj, c in zip(w, ce)) / sum(w)
    assert float(loss) == pytest.approx(float(want), rel=1e-4)
    assert m["prophetnet_loss"] == pytest.approx(float(ce[0]), rel=1e-4)
    assert m["prophetnet_future2_loss"] == pytest.approx(float(ce[2]), rel=1e-4)
    assert not obj.token_nll


def test_ngram_1_is_the_corruption_objective(tok, wiki_ids):
    model = tiny(tok).eval()
    data = windows(wiki_ids, tok, T=24, n=4)
    torch.manual_seed(5)
    a, _ = build("prophetnet", tokenizer=tok, ngram=1).loss(model, build("mass", tokenizer=tok).make_batch(data))
    torch.manual_seed(5)
    p = build("prophetnet", tokenizer=tok, ngram=1)
    b, _ = p.loss(model, p.make_batch(data))
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    assert "prophetnet_ngram" not in model.heads and p.token_nll


def test_trains_and_decodes_with_the_main_stream(tok, wiki_ids):
    torch.manual_seed(0)
    obj = build("prophetnet", tokenizer=tok, ngram=2)
    model = tiny(tok)
    obj.prepare(model)
    data = windows(wiki_ids, tok, T=24, n=64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        loss, m = obj.loss(model.train(), obj.make_batch(data[(step * 8) % 64:(step * 8) % 64 + 8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    assert model.heads["prophetnet_ngram"].weight.grad is not None
    src = obj.make_batch(data[:2])
    out = model.eval().generate(src["input_ids"], attention_mask=src["attention_mask"], max_new_tokens=5)
    assert out.shape[0] == 2 and 1 < out.shape[1] <= 6
    assert math.isfinite(m["prophetnet_future1_loss"])
    # greedy's first token is the argmax of the main stream's logits at the start token
    with torch.no_grad():
        start = torch.full((2, 1), model.config.decoder_start_token_id)
        first = model(src["input_ids"], attention_mask=src["attention_mask"], decoder_input_ids=start).logits[:, -1]
    assert out[:, 1].tolist() == first.argmax(-1).tolist()


def test_saved_model_loads_without_the_training_streams(tok, tmp_path):
    import plmkit

    obj = build("prophetnet", tokenizer=tok, ngram=2)
    model = tiny(tok)
    obj.prepare(model)
    model.save_pretrained(tmp_path / "m")
    with pytest.warns(UserWarning, match="prophetnet_ngram"):
        back = plmkit.load(tmp_path / "m")
    assert "prophetnet_ngram" not in back.heads
    for k, v in back.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])


def test_gradients_are_the_weighted_sum_of_the_plain_and_stream_gradients(tok, wiki_ids):
    """The training signal, not only the loss value: with alphas [1, 0] the n-stream pass gives every model
    parameter exactly the gradient of the plain seq2seq loss (the main stream is not perturbed by the
    extra stream, in value or in gradient), and with alphas [a, 1 - a] the gradient is a * (plain) +
    (1 - a) * (stream-1 alone)."""
    model = tiny(tok).eval()
    data = windows(wiki_ids, tok, T=24, n=4)
    torch.manual_seed(3)
    batch = build("mass", tokenizer=tok).make_batch(data)
    params = [p for n, p in model.named_parameters() if not n.startswith("heads.")]

    def grads(**opts):
        obj = build("prophetnet", tokenizer=tok, **opts)
        obj.prepare(model)
        loss, _ = obj.loss(model, batch)
        return torch.autograd.grad(loss, params, allow_unused=True)

    def same(a, b):
        for x, y in zip(a, b):
            x = torch.zeros(()) if x is None else x
            y = torch.zeros(()) if y is None else y
            torch.testing.assert_close(x.expand_as(y) if x.dim() == 0 else x,
                                       y.expand_as(x) if y.dim() == 0 else y, rtol=1e-4, atol=1e-7)

    plain = grads(ngram=1)
    same(grads(ngram=2, alphas=[1.0, 0.0]), plain)
    stream = grads(ngram=2, alphas=[0.0, 1.0])
    mixed = grads(ngram=2, alphas=[0.3, 0.7])
    same(mixed, [None if p is None and s is None else 0.3 * (torch.zeros(()) if p is None else p)
                 + 0.7 * (torch.zeros(()) if s is None else s) for p, s in zip(plain, stream)])
    assert any(s is not None and float(s.abs().max()) > 0 for s in stream)
