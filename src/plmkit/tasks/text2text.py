"""Text-to-text fine-tuning for encoder-decoders (T5-style task prefixes, generation-based evaluation).

Every task becomes "input text -> target text" (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", sec. 2.4): the source is ``"<prefix>: <text>"`` (pair
tasks: ``"<prefix> sentence1: <a> sentence2: <b>"``), the target is the label written as text (``"1"``,
``"entailment"``, ``"3.8"`` for STS-B rounded to 0.2 as in T5). Training is teacher-forced cross-entropy on
the target tokens; evaluation generates greedily and compares the decoded string to the gold target
(exact match = accuracy for classification; regression targets parse back to floats for Pearson /
Spearman, an unparseable output counts as 0, as in T5's evaluation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plmkit.errors import UserError


def target_text(label, kind: str) -> str:
    if kind == "regression":
        return f"{round(float(label) * 5) / 5:.1f}"  # T5 rounds STS-B scores to the nearest 0.2
    return str(label)


def encode_text2text(tok, examples, prefix: str, max_len: int, max_target_len: int, kind: str) -> list[dict]:
    """Features with ``input_ids`` (source) and ``target_ids`` (target + EOS)."""
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    if eos is None:
        raise UserError("text-to-text needs a tokenizer with an EOS (or [SEP]) token")
    srcs = []
    for e in examples:
        if e.text_pair is not None:
            srcs.append(f"{prefix} sentence1: {e.text} sentence2: {e.text_pair}")
        else:
            srcs.append(f"{prefix}: {e.text}")
    src_ids = tok(srcs, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    feats = []
    tgts = [target_text(e.label, kind) if e.label is not None else None for e in examples]
    tgt_ids = tok([t or "" for t in tgts], add_special_tokens=False, return_attention_mask=False,
                  return_token_type_ids=False)["input_ids"]
    for e, s, t, tt in zip(examples, src_ids, tgts, tgt_ids):
        f = {"input_ids": s[: max_len - 1] + [eos], "truncated": len(s) + 1 > max_len, "source": e.source,
             "target_text": t}
        if t is not None:
            f["target_ids"] = tt[: max_target_len - 1] + [eos]
        feats.append(f)
    return feats


class Text2TextObjective:
    """Teacher-forced target cross-entropy for an encoder-decoder (objective contract)."""

    example_kind = "task"

    def __init__(self, pad_id: int, kind: str = "classification"):
        self.pad_id, self.kind = pad_id, kind
        self.extra_terms: list = []

    def prepare(self, model) -> None:
        if not getattr(model.config, "is_encoder_decoder", False):
            raise UserError(f"--task text2text needs an encoder-decoder model (T5, BART), got family {model.config.family!r}")
        if getattr(model, "head", None) is None:
            raise UserError("text-to-text needs a model with an LM head")

    def make_batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        S = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), S), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), S), dtype=torch.long)
        for i, e in enumerate(examples):
            ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
            mask[i, : len(e["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "target_ids" in examples[0]:
            T = max(len(e["target_ids"]) for e in examples)
            labels = torch.full((len(examples), T), -100, dtype=torch.long)
            for i, e in enumerate(examples):
                labels[i, : len(e["target_ids"])] = torch.tensor(e["target_ids"])
            batch["labels"] = labels
        return batch

    def loss(self, model, batch):
        labels = batch["labels"]
        # padded target positions (-100) become pad inputs after the shift; causal attention keeps them
        # from influencing real positions, and they carry no loss
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=model.shift_right(labels))
        logits = out.logits  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100)
        with torch.no_grad():
            ok = (logits.argmax(-1) == labels) | (labels == -100)
            seq_acc = float(ok.all(-1).float().mean())
        return loss, {"task_loss": float(loss.detach()), "target_token_exact": seq_acc}


@torch.no_grad()
def generate_texts(model, obj: Text2TextObjective, tok, feats: list[dict], batch_size: int = 32,
                   max_new_tokens: int = 8) -> list[str]:
    """Greedy decoding of every feature's target, decoded to text (special tokens dropped)."""
    model.eval()
    device = next(model.parameters()).device
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    out: list[str] = []
    for b in range(0, len(feats), batch_size):
        chunk = [{"input_ids": f["input_ids"]} for f in feats[b : b + batch_size]]
        batch = obj.make_batch(chunk)
        gen = model.generate(batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                             max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=obj.pad_id)
        for row in gen[:, 1:].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            out.append(tok.decode(row, skip_special_tokens=True).strip())
    return out


def score_text2text(kind: str, feats: list[dict], preds: list[str]) -> dict[str, float]:
    import plmkit.tasks.metrics as M

    gold = [f["target_text"] for f in feats]
    if kind == "regression":
        def num(s: str) -> float:
            try:
                return float(s)
            except ValueError:
                return 0.0

        p = [num(x) for x in preds]
        g = [float(x) for x in gold]
        return {"pearson": M.pearson(p, g), "spearman": M.spearman(p, g)}
    norm = [x.replace(" ", "") for x in preds]  # WordPiece decoding may space out punctuation / digits
    gnorm = [x.replace(" ", "") for x in gold]
    acc = sum(a == b for a, b in zip(norm, gnorm)) / len(gold)
    return {"accuracy": acc, "exact_match": acc}
