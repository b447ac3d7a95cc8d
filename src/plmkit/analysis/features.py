"""Word-level hidden states of any plmkit model, layer by layer.

Sentences come in as lists of words (whitespace tokens). A sentence is encoded as the words joined by
single spaces; every token is assigned to the word whose characters its offsets overlap (special
tokens and tokens that overlap no word are dropped). **Sub-word pooling: a word's vector at a layer is
the mean of the hidden states of its tokens.** Words whose tokens fall beyond ``max_len`` are missing
(their mask entry is False). Layer 0 is the embedding output, layer i the output of block i
(``output_hidden_states``, see docs/CONTRACTS.md).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from plmkit.errors import UserError


def align(tok: Any, words: Sequence[str], max_len: int | None = None) -> tuple[list[int], list[int | None]]:
    """(token ids, word index per token or None) of ``" ".join(words)`` encoded by ``tok``."""
    text = " ".join(words)
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    enc = tok.backend.encode(text, add_special_tokens=tok.add_special_tokens_default)
    ids = list(enc.ids)
    owner: list[int | None] = []
    j = 0
    for (s, e), special in zip(enc.offsets, enc.special_tokens_mask):
        if special or e <= s:
            owner.append(None)
            continue
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        owner.append(j if j < len(spans) and spans[j][0] < e else None)
    if max_len is not None and len(ids) > max_len:
        ids, owner = ids[:max_len], owner[:max_len]
    return ids, owner


def _device(model) -> torch.device:
    return next(model.parameters()).device


def check_layers(layers: Sequence[int] | None, num_states: int) -> list[int]:
    """Validate layer indices (0 = embeddings .. num_states-1 = last block); None = all."""
    if layers is None:
        return list(range(num_states))
    bad = [i for i in layers if not 0 <= i < num_states]
    if bad:
        raise UserError(f"layer {bad[0]} is out of range: this model has layers 0..{num_states - 1} "
                        f"(0 = embeddings, {num_states - 1} = last block)")
    return sorted(set(layers))


def num_states(model) -> int:
    """Number of hidden states the model returns: embeddings + one per block."""
    n = getattr(getattr(model, "config", None), "num_layers", None)
    if n is None:
        raise UserError(f"{type(model).__name__}: not a plmkit Transformer (no config.num_layers)")
    return int(n) + 1


@torch.no_grad()
def iter_word_states(model, tok, sentences: Sequence[Sequence[str]], batch_size: int = 16,
                     max_len: int = 128) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(sentence index, states (S, n_words, H) float32, mask (n_words,) bool)`` per sentence,
    S = embeddings + every layer. Words are mean-pooled over their tokens (module docstring)."""
    model.eval()
    dev = _device(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    enc = [align(tok, s, max_len) for s in sentences]
    order = sorted(range(len(sentences)), key=lambda i: len(enc[i][0]))
    for b in range(0, len(order), batch_size):
        idx = [i for i in order[b : b + batch_size] if enc[i][0]]
        if not idx:
            continue
        T = max(len(enc[i][0]) for i in idx)
        ids = torch.full((len(idx), T), pad, dtype=torch.long)
        am = torch.zeros((len(idx), T), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(enc[i][0])] = torch.tensor(enc[i][0])
            am[r, : len(enc[i][0])] = 1
        out = model(ids.to(dev), attention_mask=am.to(dev), output_hidden_states=True)
        hs = torch.stack([h.float() for h in out.hidden_states], 1).cpu()  # (B, S, T, H)
        for r, i in enumerate(idx):
            n = len(sentences[i])
            owner = enc[i][1]
            tpos = [t for t, w in enumerate(owner) if w is not None]
            wix = torch.tensor([owner[t] for t in tpos], dtype=torch.long)
            S, H = hs.shape[1], hs.shape[3]
            sums = torch.zeros(S, n, H)
            counts = torch.zeros(n)
            if tpos:
                sums.index_add_(1, wix, hs[r][:, tpos])
                counts.index_add_(0, wix, torch.ones(len(tpos)))
            mask = counts > 0
            states = sums / counts.clamp(min=1)[None, :, None]
            yield i, states.numpy(), mask.numpy()
