"""Saving an ELMo biLM for downstream use: ``save_elmo(model, tokens, out_dir)``.

Writes the biLM in plmkit's checkpoint format (``save_pretrained``: config.json with
``"plmkit_family": "elmo"`` + model.safetensors) together with a whole-word tokenizer over its
vocabulary, so that ``plm finetune --model OUT_DIR --mode features`` loads both; the task head's
scalar mix then combines the char-CNN layer and every biLSTM layer (Peters et al. 2018, eq. 1).

The training objective (forward + backward LM losses) is ``plmkit.objectives.bilm``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from plmkit.errors import UserError


def save_elmo(model: Any, tokens: Sequence[str], out_dir: str | Path, extra_words: Sequence[str] = (),
              eos: str = "<eos>", pad: str = "<pad>", unk: str = "<unk>") -> dict[str, Any]:
    """Save an ELMo biLM whose token id ``i`` is ``tokens[i]`` with a word-level tokenizer.

    ``extra_words`` (e.g. a task's training words) are appended to the vocabulary first
    (``ELMo.extend_vocabulary``: the char-CNN spells them, so they do not collapse to ``unk``).
    The tokenizer splits on whitespace and looks whole words up (WordPiece without ``##`` pieces:
    an unknown word is ``unk``) and puts ``eos`` before and after a text, as sentence boundaries
    were in training (``eos`` is the tokenizer's BOS and EOS).
    Returns ``{"path", "vocab", "added_words"}``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from plmkit.classic.recurrent import ELMo

    if not isinstance(model, ELMo):
        raise UserError(f"save_elmo needs an elmo-* model, got {type(model).__name__}")
    tokens = [str(t) for t in tokens]
    if len(tokens) != model.config.vocab_size:
        raise UserError(f"save_elmo: {len(tokens)} token strings for vocab_size={model.config.vocab_size}")
    missing = [t for t in (eos, pad, unk) if t not in tokens]
    if missing:
        raise UserError(f"save_elmo: the vocabulary lacks the special tokens {missing}")
    known = set(tokens)
    new = [w for w in dict.fromkeys(str(w) for w in extra_words) if w not in known and w.split() == [w]]
    model.set_vocabulary(tokens)
    model.extend_vocabulary(new)
    itos = tokens + new
    model.config.pad_token_id, model.config.eos_token_id = itos.index(pad), itos.index(eos)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(itos)}, unk_token=unk, max_input_chars_per_word=1000))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([eos, pad, unk])
    e = (eos, itos.index(eos))
    tok.post_processor = processors.TemplateProcessing(single=f"{eos} $A {eos}", pair=f"{eos} $A {eos} $B:1 {eos}:1",
                                                       special_tokens=[e])
    tok.save(str(out / "tokenizer.json"))
    cfg = {"plmkit_kind": "wordpiece", "pad_token": pad, "unk_token": unk, "bos_token": eos, "eos_token": eos}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return {"path": str(out), "vocab": len(itos), "added_words": len(new)}
