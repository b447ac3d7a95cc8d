"""LAMA probing of encoder-decoders: T5 (span-corruption sentinel) and BART (mask token).

The encoder reads the template with ``[X]`` = subject and ``[Y]`` = the model's blank; the decoder
writes what its pretraining taught it to write for that blank, and the object is scored there.

*T5* (Raffel et al. 2020, span corruption): the encoder input is the sentence with ``<extra_id_0>``
at ``[Y]`` (plus ``</s>``); the pretraining target of one dropped span is ``<extra_id_0> span
<extra_id_1>``, so the decoder input is ``[start] <extra_id_0>`` and the object is the continuation
after the sentinel. Object tokens are the tokenizer's tokens of the object text alone (SentencePiece
puts the word-start mark on its first piece), and the candidate vocabulary is the lead-free one
(``CandidateVocab.mask("")``).

- ``mask`` mode (a single whole-word object token): the object is ranked in the decoder's
  distribution right after ``<extra_id_0>`` over the candidate vocabulary.
- ``candidates`` mode (any other object): each distinct object of the relation is scored by the
  mean log-probability per token of ``object tokens + <extra_id_1>`` (the span and its closing
  sentinel, which says the span ends there) given ``[start] <extra_id_0>``.

*BART* (Lewis et al. 2020): BART is trained to reconstruct the whole original text from the
corrupted one, and that is how its fill-mask works (fairseq's ``BARTModel.fill_mask`` generates the
reconstruction of the masked sentence and scores it by its log-probability; transformers' fill-mask
pipeline reads the reconstruction's distribution at the mask position). The encoder input is the
sentence with ``<mask>`` at ``[Y]``; the decoder is teacher-forced on the reconstruction
``[decoder start] <s> filled sentence </s>``.

- ``mask`` mode (a single whole-word object token): the decoder reads ``[start] <s>`` + the tokens
  before ``[Y]``, and the object is ranked in the distribution of the next position (the mask's) over
  the candidate vocabulary (with the template's lead, as for causal LMs).
- ``candidates`` mode: each distinct object is written into the sentence and scored by the mean
  log-probability per token of the reconstruction from the object to the end (object tokens + the
  template's rest + ``</s>``); the tokens before the object are the same for every candidate (as in
  the causal-LM candidate mode, ``plmkit.knowledge.lama``).

Ranks, metrics and LAMA-UHN are those of ``plmkit.knowledge.lama`` (one code path after scoring).
With ``--layers`` the decoder's block outputs (and its embedding output) are read out through the
decoder's final norm and the LM head (T5's output scaling and BART's logit bias included), for the
``mask``-mode facts.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.knowledge.lama_data import causal_ids
from plmkit.knowledge.structure import ModelStructure, intervene
from plmkit.objectives.base import attention_from_lengths, pad_2d


def blank_token(struct: ModelStructure, tok: Any) -> tuple[str, list[int]]:
    """(text put at [Y] in the encoder input, the decoder tokens after the start token before the object)."""
    fam = struct.model.config.family
    if fam == "t5":
        sent = list(getattr(tok, "sentinel_token_ids", []) or [])
        if len(sent) < 2:
            raise UserError("T5 probing needs the tokenizer's sentinels <extra_id_0> and <extra_id_1>")
        return tok.convert_ids_to_tokens(sent[0]), [sent[0]]
    mask_id = getattr(tok, "mask_token_id", None)
    if mask_id is None:
        raise UserError("BART probing needs a tokenizer with a mask token (<mask>)")
    return tok.convert_ids_to_tokens(mask_id), []


def decoder_start(struct: ModelStructure) -> int:
    start = getattr(struct.model.config, "decoder_start_token_id", None)
    if start is None:
        raise UserError(f"the {struct.model.config.family} model has no decoder_start_token_id")
    return int(start)


def object_lead(struct: ModelStructure, template: str, lead: str) -> str:
    """The text put before an object when it is tokenised on its own (T5: none; BART: the template's)."""
    return "" if struct.model.config.family == "t5" else lead


def prepare_query(q, struct: ModelStructure, tok: Any, rel, lead: str, gold: list[int], single: bool) -> None:
    """Fill ``q`` (a ``lama.Query``) for an encoder-decoder: ``q.ids`` = encoder input; ``q.dec_ids`` =
    decoder input (``mask``), or ``q.cand_ids`` / ``q.cand_start`` = decoder sequences (``candidates``)."""
    fact, fam = q.fact, struct.model.config.family
    blank, after = blank_token(struct, tok)
    start = decoder_start(struct)
    q.prompt = fact.template.replace("[X]", fact.subject).replace("[Y]", blank)
    blank_id = tok.convert_tokens_to_ids(blank)
    q.ids = list(tok.encode(q.prompt, add_special_tokens=True))
    if q.ids.count(blank_id) != 1:
        q.skip_reason = f"the blank {blank} does not survive tokenisation once"
        return
    i = fact.template.index("[Y]")
    prefix = fact.template[:i].replace("[X]", fact.subject)
    suffix = fact.template[i + 3:].replace("[X]", fact.subject)
    prefix = prefix[: len(prefix) - len(lead)] if lead else prefix
    if fam == "t5":
        dec_prefix = [start] + after
    else:
        dec_prefix = [start] + causal_ids(tok, prefix)
    if single:
        q.mode, q.dec_ids, q.gold, q.pos = "mask", dec_prefix, gold[0], len(dec_prefix) - 1
        return
    q.mode, q.candidates, q.cand_ids, q.cand_start = "candidates", list(rel.objects), [], []
    q.gold = rel.objects.index(fact.obj)
    for cand in rel.objects:
        if fam == "t5":
            ids = dec_prefix + list(tok.encode(cand, add_special_tokens=False)) + [tok.sentinel_token_ids[1]]
        else:
            ids = [start] + list(tok.encode(prefix + lead + cand + suffix, add_special_tokens=True))
        st = 0
        while st < min(len(ids), len(dec_prefix)) and ids[st] == dec_prefix[st]:
            st += 1
        q.cand_ids.append(ids)
        q.cand_start.append(max(st, 1))


def _pad_id(struct: ModelStructure) -> int:
    pad = getattr(struct.model.config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def readout(struct: ModelStructure, hidden: Tensor) -> Tensor:
    """Decoder final norm + LM head (T5's output scaling, BART's logit bias) on decoder states."""
    if struct.final_norm is not None:
        hidden = struct.final_norm(hidden)
    return struct.model.head_logits(hidden)


def vocab_logprobs(struct: ModelStructure, queries: list, all_layers: bool) -> Iterable[Tensor]:
    """Log-softmax (B, V) at each ``mask`` query's read position (decoder), like
    ``lama.position_logprobs``: the model's output, or with ``all_layers`` one readout per decoder
    state (embedding output, block 0, ..., block L-1)."""
    m = struct.model
    enc = pad_2d([q.ids for q in queries], _pad_id(struct))
    am = attention_from_lengths([len(q.ids) for q in queries], enc.shape[1])
    dec = pad_2d([q.dec_ids for q in queries], _pad_id(struct))  # right padding: causal decoder, no mask
    sel = torch.zeros_like(dec, dtype=torch.bool)
    for b, q in enumerate(queries):
        sel[b, q.pos] = True
    if not all_layers:
        yield m(enc, attention_mask=am, decoder_input_ids=dec, labels_mask=sel).logits.float().log_softmax(-1)
        return
    states: list[Tensor] = []
    h = m.decoder.embeddings.register_forward_hook(lambda mod, a, o: states.append(o))
    try:
        with intervene(struct, "layer", lambda i, x: states.append(x)):
            m(enc, attention_mask=am, decoder_input_ids=dec)
    finally:
        h.remove()
    for x in states:
        yield readout(struct, x[sel]).float().log_softmax(-1)


def candidate_scores(struct: ModelStructure, q, batch_size: int) -> Tensor:
    """(n_candidates,) mean log-probability of each candidate's scored decoder tokens; the encoder
    runs once per fact and its output is shared by the candidates' decoder batch."""
    m = struct.model
    enc_ids = torch.tensor([q.ids])
    enc = m.encode(enc_ids)[0]  # (1, S, H)
    scores = torch.empty(len(q.cand_ids))
    order = sorted(range(len(q.cand_ids)), key=lambda c: len(q.cand_ids[c]))
    for c0 in range(0, len(order), batch_size):
        idx = order[c0: c0 + batch_size]
        seqs, starts = [q.cand_ids[c][:-1] for c in idx], [q.cand_start[c] for c in idx]
        dec = pad_2d(seqs, _pad_id(struct))
        sel = torch.zeros_like(dec, dtype=torch.bool)
        tgt, owner = [], []
        for b, c in enumerate(idx):
            full = q.cand_ids[c]
            for t in range(starts[b], len(full)):
                sel[b, t - 1] = True  # row-major order of sel == this loop's order
                tgt.append(full[t])
                owner.append(b)
        lp = m(encoder_outputs=enc.expand(len(idx), -1, -1), decoder_input_ids=dec,
               labels_mask=sel).logits.float().log_softmax(-1)
        tok_lp = lp.gather(1, torch.tensor(tgt)[:, None]).squeeze(1)
        owner_t = torch.tensor(owner)
        total = torch.zeros(len(idx)).index_add_(0, owner_t, tok_lp)
        count = torch.zeros(len(idx)).index_add_(0, owner_t, torch.ones_like(tok_lp))
        scores[idx] = total / count
    return scores
