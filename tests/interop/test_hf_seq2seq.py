"""Parity with transformers for the encoder-decoders: t5, t5 v1.1 (gated-GELU), bart,
switch_transformers. Tiny random HF models are saved offline, loaded by plmkit, and compared
(encoder output, logits, greedy and beam generation); plmkit models saved with save_pretrained are
loaded by transformers and compared the same way."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from plmkit.interop.seq2seq import load_seq2seq  # noqa: E402
from plmkit.models import presets  # noqa: E402



V = 60


def _randomise(model) -> None:
    """Large random weights so that greedy decoding produces varied tokens."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_((0.0 if n.endswith("bias") else 1.0) + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 1.0)
        for n, b in model.named_buffers():
            if n.endswith("final_logits_bias"):
                b.normal_(0.0, 0.5)


def _hf(kind: str):
    T = transformers
    common = dict(vocab_size=V, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=4,
                  relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0,
                  eos_token_id=1, pad_token_id=0, dropout_rate=0.0)
    if kind == "t5":
        return T.T5ForConditionalGeneration(T.T5Config(**common))
    if kind == "t5-v1_1":
        return T.T5ForConditionalGeneration(T.T5Config(**common, feed_forward_proj="gated-gelu",
                                                       tie_word_embeddings=False))
    if kind == "switch":
        return T.SwitchTransformersForConditionalGeneration(T.SwitchTransformersConfig(
            **common, num_experts=4, expert_capacity=3, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
            router_jitter_noise=0.0))
    return T.BartForConditionalGeneration(T.BartConfig(
        vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=40,
        dropout=0.0, attention_dropout=0.0))


def _inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, V, (3, 7), generator=g)
    am = torch.ones(3, 7, dtype=torch.long)
    am[1, 5:] = 0  # right padding
    am[2, :2] = 0  # left padding
    dec = torch.randint(3, V, (3, 5), generator=g)
    return ids, am, dec


def _compare(hf, ours) -> None:
    ids, am, dec = _inputs()
    with torch.no_grad():
        r = hf(input_ids=ids, attention_mask=am, decoder_input_ids=dec)
        o = ours(ids, am, dec)
    torch.testing.assert_close(o.encoder_last_hidden_state, r.encoder_last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(o.logits, r.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["t5", "t5-v1_1", "bart", "switch"])
def test_hf_to_plmkit_logits_and_generation(kind, tmp_path):
    torch.manual_seed(0)
    hf = _hf(kind)
    _randomise(hf)
    hf.eval()
    hf.save_pretrained(tmp_path)
    ours = load_seq2seq(tmp_path)
    _compare(hf, ours)
    ids, am, _ = _inputs()
    if kind == "switch":
        return  # capacity is per call: HF and plmkit both decode token by token, forward parity is the check
    for kw in (dict(num_beams=1), dict(num_beams=3)):
        want = hf.generate(ids, attention_mask=am, max_new_tokens=10, do_sample=False, **kw)
        got = ours.generate(ids, am, max_new_tokens=10, **kw)
        assert got.tolist() == want.tolist(), kw
    assert len({tuple(r) for r in got.tolist()}) > 1  # the check is not trivially constant


@pytest.mark.parametrize("name", ["t5-tiny", "t5-v1_1-tiny", "bart-tiny", "switch-tiny"])
def test_plmkit_to_hf(name, tmp_path):
    torch.manual_seed(0)
    over = {"expert_capacity": 3} if name == "switch-tiny" else {}
    ours = presets.build(name, vocab_size=V, hidden_dropout=0.0, attention_dropout=0.0, router_jitter_noise=0.0,
                             **over) if name == "switch-tiny" else presets.build(
        name, vocab_size=V, hidden_dropout=0.0, attention_dropout=0.0)
    if name == "t5-v1_1-tiny":
        # transformers 5 always ties T5's lm_head to the embeddings; an untied plmkit head is written
        # but HF ignores it, so compare with a head equal to the embeddings
        with torch.no_grad():
            ours.head.decoder.weight.copy_(ours.shared.weight)
    _randomise(ours)
    if name == "t5-v1_1-tiny":
        with torch.no_grad():
            ours.head.decoder.weight.copy_(ours.shared.weight)
    ours.eval()
    ours.save_pretrained(tmp_path)
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    _compare(hf, ours)
    back = load_seq2seq(tmp_path)
    for (k, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


def test_bad_checkpoints_raise(tmp_path):
    from plmkit.errors import UserError

    hf = _hf("bart")
    hf.save_pretrained(tmp_path)
    import json

    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["decoder_ffn_dim"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="decoder_ffn_dim"):
        load_seq2seq(tmp_path)


@pytest.mark.parametrize("name", ["mass-tiny", "glm-tiny", "switch-tiny", "t5-tiny"])
def test_save_and_load_round_trip_through_plmkit_load(name, tmp_path):
    """Every encoder-decoder, DeBERTa, XLNet and prefix-LM model saves with save_pretrained and comes back through plmkit.models.load
    (HF format where transformers has the class, plmkit's native format otherwise)."""
    from plmkit.models import load

    torch.manual_seed(0)
    m = presets.build(name).eval()  # switch-tiny: capacity factor, no HF equivalent -> native format
    m.save_pretrained(tmp_path)
    back = load(tmp_path)
    assert type(back) is type(m)
    ids = torch.randint(5, 1000, (2, 6))
    with torch.no_grad():
        if hasattr(m, "decoder"):
            a, b = m(ids, decoder_input_ids=ids[:, :3]).logits, back(ids, decoder_input_ids=ids[:, :3]).logits
        else:
            a, b = m(ids).logits, back(ids).logits
    torch.testing.assert_close(a, b)


def _after_eos(rows: list[list[int]], eos: int = 1) -> list[list[int]]:
    """Blank what follows the first generated eos: transformers' beam search fills it with
    ``pad_token_id or eos_token_id`` (the eos id for T5, whose pad id is 0), plmkit with the pad id."""
    out = []
    for r in rows:
        gen = r[1:]
        if eos in gen:
            i = gen.index(eos)
            gen = gen[: i + 1] + [-1] * (len(gen) - i - 1)
        out.append(r[:1] + gen)
    return out


@pytest.mark.parametrize("seed", [2, 29])
def test_beam_search_stopping_matches_transformers(seed, tmp_path):
    """Length penalties that favour short (0.5) and long (2.0) hypotheses with rows that finish early: the
    stopping rule is HF's default (the best open beam scored at the current length), not the max length."""
    torch.manual_seed(seed)
    hf = _hf("t5")
    _randomise(hf)
    hf.eval()
    hf.save_pretrained(tmp_path)
    ours = load_seq2seq(tmp_path)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (4, 7), generator=g)
    am = torch.ones_like(ids)
    for lp in (0.5, 2.0):
        for k in (2, 3):
            want = hf.generate(ids, attention_mask=am, max_new_tokens=8, do_sample=False, num_beams=k,
                               length_penalty=lp).tolist()
            got = ours.generate(ids, am, max_new_tokens=8, num_beams=k, length_penalty=lp).tolist()
            assert _after_eos(got) == _after_eos(want), (lp, k)


@pytest.mark.parametrize("name", ["t5-tiny", "t5-v1_1-tiny", "switch-tiny"])
def test_fresh_t5_init_has_the_scales_of_transformers_init(name, tmp_path):
    """A freshly built T5 / Switch model is initialised like transformers' own ``from_config`` model of the same
    config: every weight's std within 12% of the one transformers draws (30% for the small position tables) (fused q|k|v and k|v compared per part).
    N(0, 0.02) everywhere (BERT's init, used before) is off by 5-50x and leaves a tiny T5 unable to learn."""
    from plmkit.models.seq2seq import CrossAttention, ScaledSelfAttention

    torch.manual_seed(0)
    over = {"expert_capacity": 3} if name == "switch-tiny" else {}  # capacity factor: no HF equivalent
    ours = presets.build(name, hidden_size=128, intermediate_size=256, vocab_size=512, pad_token_id=0,
                         eos_token_id=1, decoder_start_token_id=0, **over)
    ours.save_pretrained(tmp_path / "ours")
    cfg = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    transformers.set_seed(0)
    transformers.AutoModelForSeq2SeqLM.from_config(cfg).save_pretrained(tmp_path / "hf")
    ref = load_seq2seq(tmp_path / "hf")

    def parts(model):
        out = {}
        for mod_name, m in model.named_modules():
            if isinstance(m, ScaledSelfAttention):
                q_dim = m.num_heads * m.head_dim
                out[f"{mod_name}.q"], out[f"{mod_name}.kv"] = m.qkv.weight[:q_dim], m.qkv.weight[q_dim:]
        for n, p in model.named_parameters():
            if p.dim() == 2 and not n.endswith("attn.qkv.weight"):
                out[n] = p
        return {n: (float(p.detach().std()), p.numel()) for n, p in out.items()}

    a, b = parts(ours), parts(ref)
    # transformers 5 always ties T5's output layer (config.tie_word_embeddings is forced True); ours stays untied
    # for v1.1 and is drawn as transformers draws an untied lm_head: N(0, 1)
    assert a.keys() - b.keys() <= {"head.decoder.weight"} and not b.keys() - a.keys(), a.keys() ^ b.keys()
    if "head.decoder.weight" in a:
        assert 0.9 < a.pop("head.decoder.weight")[0] < 1.1
    assert any(isinstance(m, CrossAttention) for m in ours.modules())
    # std estimates from >= 1,024 draws are within a few % of the truth; the 32 x 4 relative-position tables get 30%
    off = {n: round(a[n][0] / b[n][0], 3) for n in a
           if not (0.88 < a[n][0] / b[n][0] < 1.12 if a[n][1] >= 1024 else 0.7 < a[n][0] / b[n][0] < 1.3)}
    assert not off, off
