"""Verbalizer scoring for fine-tuning (``plm finetune --verbalizer FILE.yaml``): the LM head as the classifier.

Instead of a classification head, the class score of an example is the language model's
log-probability of each label word at the answer position after the pattern:

- causal LM: the input is ``pattern(text)`` (the ICL template format of ``plmkit.prompting.templates``:
  ``template`` with ``{text}`` / ``{text_pair}``, ``verbalizer`` label -> word); the answer position is
  the next token after the pattern's last token;
- MLM: the input is ``[CLS] pattern(text) [SEP]`` with a mask token at ``{mask}`` in the template (or
  right after it when the template has no ``{mask}``); the answer position is the mask.

scores[c] = log softmax(LM logits at the answer position)[verbalizer token of class c] (the full
vocabulary normalises; the cross-entropy over these C scores is then the loss, as in PET). Each label
word must be a single token (``plm icl`` scores multi-token words).

Inputs longer than ``max_seq_len``: the input text (``{text}``, then ``{text_pair}``) is cut by tokens
from its end, so the pattern and the answer position always stay; such examples are flagged truncated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from plmkit.errors import UserError
from plmkit.prompting.templates import Template, load_templates
from plmkit.tasks.objective import TaskObjective, _pad

_SLOT = "\x00SLOT{}\x00"


def load_verbalizer(path: str | Path, labels: Sequence[str], pair: bool) -> Template:
    ts = load_templates([path], labels=tuple(labels), pair=pair, allow_mask=True)
    if len(ts) != 1:
        raise UserError(f"--verbalizer {path}: expected one template file, found {len(ts)}")
    return ts[0]


class VerbalizerObjective(TaskObjective):
    """Classification through the LM / MLM head restricted to the verbalizer tokens."""

    def __init__(self, template: Template, tokenizer, labels: Sequence[str], masked: bool,
                 pad_id: int | None = None, label_token_ids: Sequence[int] | None = None) -> None:
        class _Pad:
            pad_token_id = pad_id if pad_id is not None else (tokenizer.pad_token_id or 0)
            cls_token_id = sep_token_id = pad_token_id

        super().__init__("classification", len(labels), _Pad(), pooling="none")
        self.template, self.labels, self.masked = template, list(labels), masked
        self.tok = tokenizer
        if not masked and "mask" in template.slots:
            raise UserError(f"{template.source}: slot {{mask}} marks an MLM's answer position; with a causal LM "
                            "the label word is predicted after the pattern, so drop {mask}")
        if label_token_ids is None:
            label_token_ids = self._label_ids(tokenizer)
        self.label_token_ids = list(label_token_ids)

    def _label_ids(self, tok) -> list[int]:
        out = []
        for lab in self.labels:
            word = self.template.verbalizer[lab]
            ids = tok.encode(word, add_special_tokens=False)
            if len(ids) != 1:
                pieces = tok.convert_ids_to_tokens(ids)
                raise UserError(f"{self.template.source}: verbalizer {word!r} of label {lab!r} is {len(ids)} tokens "
                                f"{pieces}; --verbalizer scoring needs one token per label word (choose another "
                                "word, or score multi-token words with plm icl --score sum|mean)")
            unk = getattr(tok, "unk_token_id", None)
            if unk is not None and ids[0] == unk:
                raise UserError(f"{self.template.source}: verbalizer {word!r} of label {lab!r} is the unknown token "
                                "for this tokenizer; choose a word in its vocabulary")
            out.append(ids[0])
        if len(set(out)) != len(out):
            raise UserError(f"{self.template.source}: two labels' verbalizers are the same token")
        return out

    def info(self) -> dict[str, Any]:
        """What task.json keeps to rebuild this objective."""
        t = self.template
        return {"template": t.template, "verbalizer": t.verbalizer, "instruction": t.instruction,
                "source": t.source, "name": t.name, "masked": self.masked, "label_token_ids": self.label_token_ids}

    @classmethod
    def from_info(cls, info: dict, labels: Sequence[str], pad_id: int, tokenizer=None) -> "VerbalizerObjective":
        t = Template(name=info["name"], template=info["template"], verbalizer=info["verbalizer"],
                     instruction=info.get("instruction", ""), source=info.get("source", ""))
        from plmkit.prompting.templates import _slots

        t.slots = _slots("task.json verbalizer", t.template, allow_mask=True)
        return cls(t, tokenizer, labels, info["masked"], pad_id, info["label_token_ids"])

    # ------------------------------------------------------------------ model
    def prepare(self, model) -> None:
        """No task head: the model's own LM / MLM head scores; it must have one of the right kind."""
        cfg = model.config
        head = getattr(cfg, "head", None)
        want = "mlm" if self.masked else "lm"
        if getattr(model, "head", None) is None or head != want:
            kind = "an MLM head (config.head 'mlm')" if self.masked else "a causal LM head (config.head 'lm')"
            raise UserError(f"--verbalizer scores label words with the model's LM head; this model needs {kind}, "
                            f"but its head is {head!r}")
        if not hasattr(model, "heads"):
            model.heads = torch.nn.ModuleDict()

    # ------------------------------------------------------------------ features
    def encode_examples(self, tok, examples, labels: Sequence[str] | None, max_len: int,
                        labelled: bool = True) -> list[dict]:
        """Feature dicts (input_ids, token_type_ids, answer position, label index, truncated)."""
        index = {lab: i for i, lab in enumerate(labels or [])}
        special = getattr(tok, "special_tokens", {})
        if self.masked:
            mask = tok.mask_token_id
            if mask is None:
                raise UserError("--verbalizer with an MLM needs a tokenizer with a mask token")
            lead = [tok.cls_token_id] if tok.cls_token_id is not None else []
            tail = [tok.sep_token_id] if tok.sep_token_id is not None else []
        else:
            bos = special.get("bos")
            bos_id = tok.convert_tokens_to_ids(bos) if bos else None
            lead = [bos_id] if bos_id is not None and tok.encode("a")[:1] == [bos_id] else []
            tail = []
        pieces = _split(self.template)
        used = [p[1] for p in pieces if not isinstance(p, str) and p[1] != "mask"]
        fixed = [tok.encode(p, add_special_tokens=False) if isinstance(p, str) else None for p in pieces]
        n_fixed = len(lead) + len(tail) + sum(len(f) for f in fixed if f is not None) + (1 if self.masked else 0)
        feats = []
        for e in examples:
            slot_ids = {}
            for i, p in enumerate(pieces):
                if not isinstance(p, str) and p[1] != "mask":
                    text = (e.text if p[1] == "text" else e.text_pair or "").strip()
                    space = " " if p[2] else ""
                    slot_ids[p[1]] = tok.encode(space + text, add_special_tokens=False)
            truncated = False
            while n_fixed + sum(len(slot_ids[n]) for n in used) > max_len:
                longest = max(used, key=lambda n: len(slot_ids[n]))
                if not slot_ids[longest]:
                    raise UserError(f"{e.source}: the pattern alone is {n_fixed} tokens, more than --max-seq-len "
                                    f"{max_len}")
                over = n_fixed + sum(len(slot_ids[n]) for n in used) - max_len
                slot_ids[longest] = slot_ids[longest][: max(len(slot_ids[longest]) - over, 0)]
                truncated = True
            ids = list(lead)
            pos = None
            for p, f in zip(pieces, fixed):
                if isinstance(p, str):
                    ids += f
                elif p[1] == "mask":
                    pos = len(ids)
                    ids.append(mask)
                else:
                    ids += slot_ids[p[1]]
            if self.masked and pos is None:
                pos = len(ids)
                ids.append(mask)
            if not self.masked:
                pos = len(ids) - 1  # the next token after the pattern is predicted from its last token
            ids += tail
            feat = {"input_ids": ids, "token_type_ids": [0] * len(ids), "answer_position": pos,
                    "truncated": truncated}
            if labelled and e.label is not None and labels is not None:
                if e.label not in index:
                    raise UserError(f"{e.source}: label {e.label!r} is not one of {list(labels)}")
                feat["label"] = index[e.label]
            feats.append(feat)
        return feats

    def make_batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {"input_ids": _pad([e["input_ids"] for e in examples], self.pad_id),
                 "token_type_ids": _pad([e["token_type_ids"] for e in examples], 0),
                 "attention_mask": _pad([[1] * len(e["input_ids"]) for e in examples], 0),
                 "answer_position": torch.tensor([e["answer_position"] for e in examples])}
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
        return batch

    def forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[Any, torch.Tensor]:
        ids = batch["input_ids"]
        sel = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        sel[torch.arange(ids.shape[0], device=ids.device), batch["answer_position"].to(ids.device)] = True
        tt = batch["token_type_ids"] if getattr(model.config, "type_vocab_size", 0) else None
        out = model(ids, attention_mask=batch["attention_mask"], token_type_ids=tt, labels_mask=sel)
        logp = torch.log_softmax(out.logits.float(), dim=-1)  # (B, V): one answer position per row
        return out, logp[:, torch.tensor(self.label_token_ids, device=logp.device)]


def _split(t: Template) -> list:
    """The template as literal strings and ("slot", name, leading space) markers, in order (instruction first).
    A literal's trailing space before an input slot moves into the slot's text (" word", as BPE sees it)."""
    import string

    parts: list = []
    if t.instruction:
        parts.append(t.instruction + t.separator)
    for lit, name, _, _ in string.Formatter().parse(t.template):
        space = False
        if lit and name not in (None, "mask") and lit.endswith(" "):
            lit, space = lit.rstrip(" "), True
        if lit:
            parts.append(lit)
        if name is not None:
            parts.append(("slot", name, space))
    return parts


def label_word_ids(obj: VerbalizerObjective) -> list[int]:
    return list(obj.label_token_ids)
