"""``plm generate`` and ``plm fill-mask`` end to end on tiny saved models with trained tokenizers."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch

from plmkit.cli.main import main
from plmkit.models import load

TEXT = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat and the log"] * 20


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    from plmkit.tokenization import train_tokenizer_from_iterator

    d = tmp_path_factory.mktemp("gpt")
    tok = train_tokenizer_from_iterator(TEXT, kind="bpe", vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = load("gpt2-tiny", vocab_size=len(tok), bos_token_id=None, eos_token_id=None)
    model.save_pretrained(d)
    tok.save(d)
    return d, tok


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from plmkit.tokenization import train_tokenizer_from_iterator

    d = tmp_path_factory.mktemp("bert")
    tok = train_tokenizer_from_iterator(TEXT, kind="wordpiece", vocab_size=200, min_frequency=1)
    torch.manual_seed(0)
    model = load("bert-tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id, mask_token_id=tok.mask_token_id)
    model.save_pretrained(d)
    tok.save(d)
    return d, tok


def test_generate_streams_the_greedy_continuation(gpt_dir, capsys):
    d, tok = gpt_dir
    assert main(["generate", str(d), "the cat", "--max-new-tokens", "6", "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    model = load(str(d)).eval()
    ids = tok.encode("the cat", add_special_tokens=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=6)
    assert printed == tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=True) + "\n"


@pytest.mark.parametrize("kind, expected", [("amx", torch.bfloat16), ("avx512_bf16", torch.bfloat16),
                                            (None, torch.float32)])
def test_generate_precision_auto_follows_the_cpu(gpt_dir, capsys, monkeypatch, kind, expected):
    import plmkit.models.kernels as kernels
    from plmkit.models import Transformer

    d, tok = gpt_dir
    monkeypatch.setattr(kernels, "cpu_bf16", lambda: kind)
    dtypes, real = [], Transformer.generate

    def spy(self, *a, **k):
        dtypes.append(next(self.parameters()).dtype)
        return real(self, *a, **k)

    monkeypatch.setattr(Transformer, "generate", spy)
    assert main(["generate", str(d), "the cat", "--max-new-tokens", "4"]) == 0
    assert dtypes == [expected]
    assert f"precision {'bf16' if expected == torch.bfloat16 else 'fp32'} (auto: " in capsys.readouterr().err
    assert main(["generate", str(d), "the cat", "--max-new-tokens", "4", "--bf16"]) == 0  # alias of --precision bf16
    assert dtypes[-1] == torch.bfloat16 and capsys.readouterr().out.strip()


def test_generate_pack_weights_flag(gpt_dir, capsys, monkeypatch):
    import plmkit.generation.decode as decode

    d, _ = gpt_dir
    seen, real = [], decode.decoding_weights

    def spy(model, enabled):
        seen.append(enabled)
        return real(model, enabled)

    monkeypatch.setattr(decode, "decoding_weights", spy)
    outs = []
    for flag in ("auto", "on", "off"):
        assert main(["generate", str(d), "the cat", "--max-new-tokens", "6", "--pack-weights", flag]) == 0
        outs.append(capsys.readouterr().out)
    assert seen == [None, True, False] and outs[0] == outs[1] == outs[2]  # same tokens either way
    assert main(["generate", "lstm-tiny", "x", "--pack-weights", "on"]) == 2
    assert capsys.readouterr().err.strip() == (
        "plm generate: error: --pack-weights on: applies to Transformer models, not to the recurrent lstm LM")


def test_generate_reads_stdin_and_beams(gpt_dir, capsys, monkeypatch):
    d, _ = gpt_dir
    monkeypatch.setattr(sys, "stdin", io.StringIO("the dog\n"))
    assert main(["generate", str(d), "--max-new-tokens", "4", "--num-beams", "2", "--echo"]) == 0
    assert capsys.readouterr().out.startswith("the dog")


def test_generate_user_errors(gpt_dir, capsys):
    d, _ = gpt_dir
    assert main(["generate", "gpt2-tiny", "hello"]) == 2
    assert "pass --tokenizer" in capsys.readouterr().err
    assert main(["generate", str(d / "missing"), "hello"]) == 2  # a bad path is not called a preset
    err = capsys.readouterr().err
    assert "missing: model path does not exist" in err and "preset" not in err
    assert main(["generate", str(d), "the", "--top-p", "0"]) == 2
    assert "--top-p: expected a number in (0, 1], got 0.0" in capsys.readouterr().err


def test_fill_mask_top_k(bert_dir, capsys):
    d, tok = bert_dir
    assert main(["fill-mask", str(d), "the [MASK] sat on the [MASK]", "--top-k", "3", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert len(rec["masks"]) == 2 and all(len(m) == 3 for m in rec["masks"])
    scores = [o["score"] for o in rec["masks"][0]]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0
    model = load(str(d)).eval()
    ids = torch.tensor([tok.encode("the [MASK] sat on the [MASK]")])
    best = model(ids).logits[ids == tok.mask_token_id].argmax(-1)
    assert [m[0]["id"] for m in rec["masks"]] == best.tolist()


def test_fill_mask_errors(bert_dir, gpt_dir, capsys):
    d, _ = bert_dir
    assert main(["fill-mask", str(d), "no mask here"]) == 2
    assert "no [MASK]" in capsys.readouterr().err
    assert main(["fill-mask", str(gpt_dir[0]), "the [MASK]"]) == 2
