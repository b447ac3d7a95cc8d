"""Tiny random Hugging Face models of every supported family, and output comparisons.

Configs follow transformers' ``ModelTester`` sizes (hidden 32, 2 layers, vocab 99). Nothing is
downloaded: the models are built from configs and saved to a temp dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

VOCAB = 99


@dataclass
class Case:
    """One HF architecture: how to build it and how to read its outputs."""

    name: str
    build: Callable[[], Any]  # -> transformers model (random init, eval mode)
    pad_id: int = 0
    causal: bool = False
    token_types: bool = True


def _hf():
    import transformers as T

    return T


def _enc_kwargs(**kw: Any) -> dict:
    base = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=64)
    base.update(kw)
    return base


def cases() -> list[Case]:
    T = _hf()
    return [
        Case("bert-pretraining", lambda: T.BertForPreTraining(T.BertConfig(**_enc_kwargs()))),
        Case("bert-model", lambda: T.BertModel(T.BertConfig(**_enc_kwargs()))),
        Case("roberta-mlm", lambda: T.RobertaForMaskedLM(T.RobertaConfig(**_enc_kwargs(
            type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2))), pad_id=1, token_types=False),
        Case("albert-pretraining", lambda: T.AlbertForPreTraining(T.AlbertConfig(**_enc_kwargs(
            embedding_size=16, hidden_act="gelu_new")))),
        Case("electra-discriminator", lambda: T.ElectraForPreTraining(T.ElectraConfig(**_enc_kwargs(
            embedding_size=16)))),
        Case("electra-generator", lambda: T.ElectraForMaskedLM(T.ElectraConfig(**_enc_kwargs(
            embedding_size=16)))),
        Case("openai-gpt", lambda: T.OpenAIGPTLMHeadModel(T.OpenAIGPTConfig(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)), causal=True, token_types=False),
        Case("gpt2", lambda: T.GPT2LMHeadModel(T.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=37,
            bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)), causal=True, token_types=False),
        Case("llama-gqa", lambda: T.LlamaForCausalLM(T.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=37, max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2)), causal=True, token_types=False),
        Case("llama-tied", lambda: T.LlamaForCausalLM(T.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=37, max_position_embeddings=64, tie_word_embeddings=True,
            bos_token_id=1, eos_token_id=2)), causal=True, token_types=False),
    ]


def make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of 3 with padding: right-padded rows (and a left-padded row for decoders)."""
    g = torch.Generator().manual_seed(seed)
    B, L = 3, 11
    ids = torch.randint(3, VOCAB, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 7:] = 0  # right padding
    mask[2, 9:] = 0
    ids[mask == 0] = case.pad_id
    out = {"input_ids": ids, "attention_mask": mask}
    if case.token_types:
        tt = torch.zeros(B, L, dtype=torch.long)
        tt[:, 5:] = 1
        out["token_type_ids"] = tt * mask
    return out


def hf_outputs(model: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """last_hidden_state / logits / pooled / extra-head logits of an HF model."""
    base = getattr(model, model.base_model_prefix, model)
    res: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        b = base(**inputs)
        res["last_hidden_state"] = b.last_hidden_state
        if getattr(b, "pooler_output", None) is not None:
            res["pooled"] = b.pooler_output
        if base is not model:
            out = model(**inputs)
            name = type(model).__name__
            if name.endswith("ForPreTraining") and hasattr(out, "prediction_logits"):
                res["logits"] = out.prediction_logits
                extra = getattr(out, "seq_relationship_logits", None)
                if extra is None:
                    extra = out.sop_logits
                res["pair"] = extra
            elif name == "ElectraForPreTraining":
                res["rtd"] = out.logits
            else:
                res["logits"] = out.logits
    return res


def our_outputs(model: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same quantities from a plmkit Transformer."""
    res: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = model(**inputs)
        res["last_hidden_state"] = out.last_hidden_state
        if out.pooled is not None:
            res["pooled"] = out.pooled
        if out.logits is not None:
            res["logits"] = out.logits
        for name in ("nsp", "sop"):
            if name in model.heads:
                res["pair"] = model.heads[name](out.pooled)
        if "rtd" in model.heads:
            res["rtd"] = model.heads["rtd"](out.last_hidden_state)
    return res


def max_diffs(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, float]:
    """Max |ref - got| per output, over non-padding positions for per-token outputs."""
    assert set(ref) == set(got), (sorted(ref), sorted(got))
    keep = mask.bool()
    diffs = {}
    for k in ref:
        a, b = ref[k], got[k]
        assert a.shape == b.shape, (k, a.shape, b.shape)
        if a.dim() >= 2 and a.shape[:2] == keep.shape:
            a, b = a[keep], b[keep]
        diffs[k] = float((a - b).abs().max())
    return diffs
