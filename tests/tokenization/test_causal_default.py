"""A causal LM's tokenizer does not wrap a prompt in [CLS] ... [SEP] by default (issue 24), and the
README's Python snippet encodes and generates from a prompt correctly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

import plmkit
from plmkit.tokenization import load_tokenizer
from plmkit.tokenization.train import train_tokenizer_from_iterator

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = "the quick brown fox jumps over the lazy dog\n"


def _char_tok():
    return train_tokenizer_from_iterator([TEXT] * 5, kind="char", vocab_size=None)


def _model_dir(tmp_path: Path, preset: str, tok) -> Path:
    torch.manual_seed(0)
    model = plmkit.load(preset, vocab_size=tok.vocab_size)
    d = tmp_path / preset
    model.save_pretrained(d)
    tok.save(d)
    return d


def test_causal_lm_tokenizer_does_not_wrap_prompts(tmp_path):
    tok = _char_tok()
    bare = tok.encode("fox", add_special_tokens=False)
    assert tok.encode("fox") == [tok.cls_token_id, *bare, tok.sep_token_id]  # a lone tokenizer: BERT-style
    d = _model_dir(tmp_path, "gpt2-tiny", tok)
    causal = load_tokenizer(d)
    assert causal.add_special_tokens_default is False
    assert causal.encode("fox") == bare and causal.encode_batch(["fox", "dog"])[0] == bare
    assert causal.encode("fox", add_special_tokens=True) == [tok.cls_token_id, *bare, tok.sep_token_id]
    assert load_tokenizer(d / "tokenizer.json").encode("fox") == bare  # the file inside the directory too
    # beside an encoder (BERT), the template stays the default
    enc = load_tokenizer(_model_dir(tmp_path, "bert-tiny", tok))
    assert enc.add_special_tokens_default is True and enc.encode("fox") == [tok.cls_token_id, *bare, tok.sep_token_id]
    # a recurrent LM (plmkit's own config.json) is a causal LM too
    assert load_tokenizer(_model_dir(tmp_path, "lstm-tiny", tok)).encode("fox") == bare
    # an explicit choice at load time wins
    assert load_tokenizer(d, add_special_tokens_default=True).encode("fox")[0] == tok.cls_token_id


def test_bos_only_template_is_kept_for_a_causal_lm(tmp_path):
    """llama-style tokenizers prepend BOS, which the model was trained with: that default stays."""
    from tokenizers import processors

    tok = train_tokenizer_from_iterator([TEXT] * 5, kind="bpe", vocab_size=300, min_frequency=1)
    bos = tok.bos_token_id
    tok.backend.post_processor = processors.TemplateProcessing(single=f"{tok.bos_token} $A",
                                                               special_tokens=[(tok.bos_token, bos)])
    d = _model_dir(tmp_path, "llama-tiny", tok)
    again = load_tokenizer(d)
    assert again.add_special_tokens_default is True
    assert again.encode("fox") == [bos, *tok.encode("fox", add_special_tokens=False)]


def _readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    snippet = next(b for b in blocks if "generate(" in b)
    return snippet


def test_readme_snippet_prompt_and_generation(tmp_path, capsys):
    """Run README's snippet on a tiny causal LM saved with a char tokenizer (a [CLS]/[SEP] tokenizer
    is the case that went wrong) in place of runs/smollm2."""
    tok = _char_tok()
    d = _model_dir(tmp_path, "gpt2-tiny", tok)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "gpt2"
    code = _readme_python()
    assert "runs/smollm2" in code
    ns: dict = {}
    exec(compile(code.replace("runs/smollm2", str(d)), "README.md", "exec"), ns)  # noqa: S102 - our own README
    prompt = ns["prompt"]
    assert prompt == tok.encode("The capital of France is", add_special_tokens=False)
    assert tok.cls_token_id not in prompt and tok.sep_token_id not in prompt
    out = ns["out"]
    assert out.shape[0] == 1 and out[0, : len(prompt)].tolist() == prompt and out.shape[1] > len(prompt)
    printed = capsys.readouterr().out
    assert printed.strip("\n") == tok.decode(out[0, len(prompt):].tolist(), skip_special_tokens=True).strip("\n")

