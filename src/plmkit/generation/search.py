"""The decoding loops shared by decoder-only (``decode.generate``) and encoder-decoder
(``seq2seq.generate``) generation: greedy / multinomial sampling and beam search.

Both run over a *stepper*, the object that owns the model, its cache and the growing ids:
``prefill() -> (N, V)`` next-token logits of the prefix, ``step(tokens (N,)) -> (N, V)`` after
appending one token per row, ``reorder(index (N,))`` to follow beams, and (beam search) ``ids``,
the (N, P + generated) sequences including the prefix. The loops return the prefix followed by the
generated tokens, (B, P + n); rows that finished early are filled with ``pad_id``.

``constrain(scores, step)`` (optional) rewrites the processed scores of step ``step`` (BART's forced
first / last token). Logit processing is ``plmkit.generation.logits.process`` in HF's order.

Beam search follows transformers' ``GenerationMixin._beam_search`` (v5) with its defaults: 2K
candidates per step, a finished hypothesis scores ``sum log p / generated_length ** length_penalty``,
an end-of-sequence token among candidates K+1..2K is ignored, and a row stops once it holds K
finished hypotheses and its best open beam, scored at the current length, cannot beat the worst of
them (``early_stopping=False``). One difference, deliberate: transformers fills the tail of a
hypothesis that finished early with ``pad_token_id or eos_token_id`` (so with the eos id when the pad
id is 0, as in T5); here it is always ``pad_id``, as in greedy decoding.

References: Graves 2012 / Sutskever et al. 2014 (beam search); Holtzman et al. 2020 (top-p).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from plmkit.generation.logits import process

Constrain = Callable[[Tensor, int], Tensor]


def _emit(streamer: Any, tokens: Tensor) -> None:
    if streamer is None:
        return
    if hasattr(streamer, "put"):
        streamer.put(tokens)
    else:
        streamer(tokens)


def sample_loop(stepper: Any, prefix: Tensor, max_new_tokens: int, do_sample: bool, temperature: float, top_k: int,
                top_p: float, penalty: float, eos: list[int], pad_id: int, streamer: Any = None,
                generator: torch.Generator | None = None, constrain: Constrain | None = None) -> Tensor:
    """Greedy or sampled decoding of ``max_new_tokens`` (>= 1) tokens after ``prefix`` (B, P)."""
    B, P = prefix.shape
    out = prefix.new_empty(B, P + max_new_tokens)
    out[:, :P] = prefix
    eos_t = torch.tensor(eos, device=prefix.device) if eos else None
    unfinished = torch.ones(B, dtype=torch.bool, device=prefix.device)
    logits = stepper.prefill()
    n = 0
    for step in range(max_new_tokens):
        scores = process(logits.float(), out[:, : P + step] if penalty != 1.0 else None, temperature=temperature,
                         top_k=top_k, top_p=top_p, penalty=penalty, sampling=do_sample)
        if constrain is not None:
            scores = constrain(scores, step)
        if do_sample:
            nxt = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(-1)
        if eos_t is not None:
            nxt = torch.where(unfinished, nxt, nxt.new_full((), pad_id))
            unfinished = unfinished & ~torch.isin(nxt, eos_t)
        out[:, P + step] = nxt
        n = step + 1
        _emit(streamer, nxt)
        if n == max_new_tokens or (eos_t is not None and not bool(unfinished.any())):
            break
        logits = stepper.step(nxt)
    if streamer is not None and hasattr(streamer, "end"):
        streamer.end()
    return out[:, : P + n]


def beam_loop(stepper: Any, prefix: Tensor, K: int, max_new_tokens: int, penalty: float, eos: list[int],
              pad_id: int, length_penalty: float, constrain: Constrain | None = None) -> Tensor:
    """Beam search of width ``K`` over ``stepper``, whose ``ids`` start as ``prefix`` repeated K times per row
    ((B K, P), row-major in B); returns the best hypothesis per row after ``prefix`` (B, P), (B, P + n)."""
    B, P = prefix.shape
    dev = prefix.device
    beam_scores = torch.zeros(B, K, device=dev)
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    finished: list[list[tuple[float, Tensor]]] = [[] for _ in range(B)]
    done = [False] * B
    logits = stepper.prefill()
    V = logits.shape[-1]
    for step in range(max_new_tokens):
        logp = process(logits.float(), stepper.ids if penalty != 1.0 else None, penalty=penalty).log_softmax(-1)
        if constrain is not None:
            logp = constrain(logp, step)
        cand = (logp + beam_scores.view(-1, 1)).view(B, K * V)
        top_scores, top_idx = cand.topk(2 * K, dim=1)  # (B, 2K)
        src_beam, token = top_idx // V, top_idx % V
        new_scores = torch.full((B, K), float("-inf"), device=dev)
        new_src = torch.zeros(B, K, dtype=torch.long, device=dev)
        new_tok = torch.full((B, K), pad_id, dtype=torch.long, device=dev)
        gen_len = step + 1
        ts, sb, tk = top_scores.tolist(), src_beam.tolist(), token.tolist()
        for b in range(B):
            if done[b]:
                new_scores[b, 0] = 0.0  # keep a dummy beam alive; its row is ignored
                new_src[b] = b * K
                continue
            j = 0
            for r in range(2 * K):
                s, beam, tok = ts[b][r], sb[b][r], tk[b][r]
                if tok in eos:
                    if r >= K:  # HF: an eos beyond the top K candidates is not a hypothesis
                        continue
                    seq = torch.cat([stepper.ids[b * K + beam, P:], token.new_tensor([tok])])
                    finished[b].append((s / gen_len ** length_penalty, seq))
                    finished[b].sort(key=lambda x: -x[0])
                    del finished[b][K:]
                else:
                    new_scores[b, j], new_src[b, j], new_tok[b, j] = s, b * K + beam, tok
                    j += 1
                if j == K:
                    break
            if len(finished[b]) == K:
                # HF's default (early_stopping=False) heuristic: the best open beam, scored at its
                # current length, cannot beat the worst kept hypothesis
                if finished[b][-1][0] >= float(new_scores[b].max()) / gen_len ** length_penalty:
                    done[b] = True
        beam_scores = new_scores
        stepper.reorder(new_src.view(-1))
        if all(done) or step == max_new_tokens - 1:
            gen = torch.cat([stepper.ids[:, P:], new_tok.view(-1, 1)], dim=1)  # (B K, n)
            break
        logits = stepper.step(new_tok.view(-1))
    # close: open beams compete with the finished hypotheses
    results = []
    for b in range(B):
        hyps = list(finished[b])
        if not done[b]:
            for k in range(K):
                s = float(beam_scores[b, k])
                if s != float("-inf"):
                    hyps.append((s / gen.shape[1] ** length_penalty, gen[b * K + k]))
        hyps.sort(key=lambda x: -x[0])
        results.append(hyps[0][1])
    n = max(len(r) for r in results)
    out = prefix.new_full((B, P + n), pad_id)
    out[:, :P] = prefix
    for b, r in enumerate(results):
        out[b, P: P + len(r)] = r
    return out
