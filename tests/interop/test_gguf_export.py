"""GGUF out: tiny random llama and gpt2 models (saved by transformers, with a byte-level BPE tokenizer
trained by plmkit) -> ``plm convert DIR OUT.gguf --to gguf --dtype ...`` -> read back by plmkit's own
GGUF import and by transformers' GGUF loader."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="GGUF parity needs transformers (plmkit[interop])")
gguf = pytest.importorskip("gguf", reason="GGUF export needs the gguf package (plmkit[interop])")

import plmkit  # noqa: E402
from plmkit.cli.main import main as plm  # noqa: E402

V = 320  # model rows; the tokenizer uses fewer, the rest are written as [PAD{id}]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TEXT = "The quick brown fox, 12 times!\n  tabs\there and ünïcödé 😀 <|endoftext|> end"
# q8_0 round-trip tolerance: max |logit difference| / std(logits) against the float32 model
Q8_TOL = 0.1


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    yield


def _tokenizer():
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    corpus = ["the quick brown fox jumps over the lazy dog", "hello there, he said", "tabs\tand\nlines",
              "numbers 12 345 6789"] * 20
    return train_tokenizer_from_iterator(corpus, kind="bpe", vocab_size=290, style="gpt2", min_frequency=1)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def src_dir(request, tmp_path_factory):
    """An HF-format directory: random tiny model + plmkit byte-level BPE tokenizer (+ chat template)."""
    torch.manual_seed(0)
    tok = _tokenizer()
    eos = tok.backend.token_to_id("<|endoftext|>")
    if request.param == "llama":
        cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                                       bos_token_id=eos, eos_token_id=eos)
        hf = transformers.LlamaForCausalLM(cfg)
    else:
        # n_positions 1024: transformers reads gpt2.context_length into n_ctx and keeps the default n_positions
        cfg = transformers.GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=1024,
                                      bos_token_id=eos, eos_token_id=eos)
        hf = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for n, p in hf.named_parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.dim() == 1 else 0.02))
    d = tmp_path_factory.mktemp(request.param)
    hf.eval().save_pretrained(d)
    tok.save(d)
    if request.param == "llama":  # a chat template travels with the tokenizer config
        c = json.loads((d / "tokenizer_config.json").read_text())
        c["chat_template"] = TEMPLATE
        (d / "tokenizer_config.json").write_text(json.dumps(c))
    return d


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 280, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    return ids, mask


def _logits(model, ids, mask):
    with torch.no_grad():
        return model.eval()(ids, attention_mask=mask).logits[mask.bool()]


def _export(src, out, dtype, capsys):
    assert plm(["convert", str(src), str(out), "--to", "gguf", "--dtype", dtype]) == 0
    msg = capsys.readouterr().out
    assert str(out) in msg and dtype in msg and "byte-level BPE" in msg
    return out


@pytest.mark.parametrize("dtype", ["float32", "float16", "q8_0"])
def test_export_round_trips_through_plmkit_and_transformers(src_dir, dtype, tmp_path, capsys):
    out = _export(src_dir, tmp_path / "m.gguf", dtype, capsys)
    ref = plmkit.load(src_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = plmkit.load(out)
    assert back.config.family == ref.config.family and back.config.vocab_size == V
    ids, mask = _batch()
    want = _logits(ref, ids, mask)
    got = _logits(back, ids, mask)
    if dtype == "float32":
        assert torch.equal(got, want)
    elif dtype == "float16":  # matrices rounded to float16, vectors kept: exactly that model
        with torch.no_grad():
            for p in ref.parameters():
                if p.dim() == 2:
                    p.copy_(p.half().float())
        assert torch.equal(got, _logits(ref, ids, mask))
        assert not torch.equal(got, want)  # the file really holds float16
    else:
        # close to the float model: max |diff| / std(logits) was 0.052 (llama) and 0.021 (gpt2) with
        # every argmax kept; the tolerance is Q8_TOL
        err = (got - want).abs().max().item() / want.std().item()
        assert 0 < err < Q8_TOL, err
        assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() >= 0.9
        # and exactly the float model with each matrix passed through gguf's own Q8_0 (rows of 32k
        # values) or float16 (other rows): the blocks run along the rows plmkit computes with
        Q = gguf.GGMLQuantizationType.Q8_0
        with torch.no_grad():
            for p in ref.parameters():
                if p.dim() == 2:
                    a = p.numpy()
                    a = gguf.quants.dequantize(gguf.quants.quantize(a, Q), Q) if a.shape[-1] % 32 == 0 else \
                        a.astype(np.float16)
                    p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32).reshape(p.shape)))
        assert torch.equal(got, _logits(ref, ids, mask))
        types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
        assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"

    # transformers' GGUF loader reads the same file to the same logits (it de-quantizes to float32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name)
    assert (_logits(hf, ids, mask) - got).abs().max().item() < 1e-4


def test_export_tokenizer_and_chat_template(src_dir, tmp_path, capsys):
    out = _export(src_dir, tmp_path / "t.gguf", "float32", capsys)
    src_tok = plmkit.load_tokenizer(src_dir)
    want = src_tok.encode(TEXT, add_special_tokens=False)
    assert src_tok.decode(want) == TEXT
    hf_tok = transformers.AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    assert hf_tok(TEXT, add_special_tokens=False).input_ids == want
    assert hf_tok.decode(want) == TEXT
    from plmkit.interop.gguf import gguf_tokenizer

    assert gguf_tokenizer(out).encode(TEXT, add_special_tokens=False) == want
    r = gguf.GGUFReader(str(out))
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    n = src_tok.vocab_size
    assert len(tokens) == V and tokens[n:] == [f"[PAD{i}]" for i in range(n, V)] and set(types[n:]) == {5}
    eos = src_tok.backend.token_to_id("<|endoftext|>")
    assert types[eos] == 3 and r.fields["tokenizer.ggml.eos_token_id"].contents() == eos
    assert r.fields["tokenizer.ggml.model"].contents() == "gpt2" and r.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    if src_dir.name.startswith("llama"):
        assert r.fields["tokenizer.chat_template"].contents() == TEMPLATE
        assert hf_tok.chat_template == TEMPLATE
    else:
        assert "tokenizer.chat_template" not in r.fields


def test_export_refusals(src_dir, tmp_path, capsys):
    out = _export(src_dir, tmp_path / "x.gguf", "float16", capsys)
    # an existing file needs --overwrite (exit 2, one line on stderr)
    assert plm(["convert", str(src_dir), str(out), "--to", "gguf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert plm(["convert", str(src_dir), str(out), "--overwrite", "--no-tokenizer"]) == 0  # .gguf implies --to gguf
    r = gguf.GGUFReader(str(out))
    assert "tokenizer.ggml.tokens" not in r.fields and r.fields["general.file_type"].contents() == 0
    capsys.readouterr()
    assert plm(["convert", str(src_dir), str(tmp_path / "y.gguf"), "--dtype", "bfloat16"]) == 2
    assert "--dtype" in capsys.readouterr().err


def test_export_refuses_non_byte_level_tokenizer(tmp_path, capsys):
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2,
                                                         n_positions=16)).save_pretrained(tmp_path / "m")
    train_tokenizer_from_iterator(["a b c d e f"] * 5, kind="wordpiece", vocab_size=60).save(tmp_path / "m")
    assert plm(["convert", str(tmp_path / "m"), str(tmp_path / "m.gguf")]) == 2
    err = capsys.readouterr().err
    assert "WordPiece" in err and "--no-tokenizer" in err and not (tmp_path / "m.gguf").exists()
    assert not list(tmp_path.glob(".m.gguf*"))  # no temp file left behind
    assert plm(["convert", str(tmp_path / "m"), str(tmp_path / "m.gguf"), "--no-tokenizer"]) == 0
    np.testing.assert_array_equal(  # tied gpt2: no output.weight; token_embd holds the embeddings
        sorted(t.name for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors if not t.name.startswith("blk")),
        ["output_norm.bias", "output_norm.weight", "position_embd.weight", "token_embd.weight"])


@pytest.mark.parametrize("extra", [{"attention_bias": True}, {"head_dim": 32}])
def test_llama_variants_round_trip(extra, tmp_path):
    """q/k biases are permuted like their rows; a head_dim other than hidden / heads is written as
    rope.dimension_count + attention.key_length. (transformers' GGUF loader has no llama
    attention_bias and drops the biases, so only plmkit reads the first file back exactly.)"""
    from plmkit.interop.gguf_export import export_gguf

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                                   tie_word_embeddings=True, **extra)
    hf = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "m")
    info = export_gguf(tmp_path / "m", tmp_path / "m.gguf", tokenizer=False)
    assert info["num_tensors"] == len(hf.state_dict()) - ("lm_head.weight" in hf.state_dict())
    ids = torch.randint(0, 100, (1, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    back = plmkit.load(tmp_path / "m.gguf")
    assert torch.equal(_logits(back, ids, mask), _logits(plmkit.load(tmp_path / "m"), ids, mask))
    if "head_dim" in extra:
        ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
        assert (_logits(ref, ids, mask) - _logits(back, ids, mask)).abs().max().item() < 1e-4
