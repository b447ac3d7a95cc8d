"""``plm fill-mask``: the top-k predictions of a masked language model for every [MASK].

    plm fill-mask path/to/bert "Paris is the [MASK] of France." --top-k 5
    plm fill-mask path/to/roberta --json < sentences.txt

The mask may be written as the tokenizer's own mask token (``[MASK]``, ``<mask>``) or as ``[MASK]``.
Texts come from the argument or, one per line, from stdin.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from plmkit.checks import POSITIVE, arg

HELP = "Predict the [MASK] tokens of a masked language model."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="HF-format model directory with an MLM head (or a preset, with --tokenizer)")
    p.add_argument("text", nargs="?", default=None, help="text with [MASK] tokens ('-' or omitted: lines of stdin)")
    p.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model directory)")
    p.add_argument("--top-k", type=arg(int, POSITIVE), default=5, help="predictions to show per mask")
    p.add_argument("--json", action="store_true", help="print one JSON object per text instead of a table")


def fill_mask(model: Any, tok: Any, text: str, top_k: int = 5) -> list[list[dict]]:
    """For each mask in ``text`` (left to right), the ``top_k`` {token, id, score} predictions."""
    import torch

    from plmkit.errors import UserError

    mask_id = getattr(tok, "mask_token_id", None)
    if mask_id is None:
        raise UserError("the tokenizer has no mask token")
    mask_tok = tok.convert_ids_to_tokens(mask_id)
    if mask_tok != "[MASK]":
        text = text.replace("[MASK]", mask_tok)
    ids = torch.tensor([tok.encode(text, add_special_tokens=True)])
    sel = ids == mask_id
    if not bool(sel.any()):
        raise UserError(f"no {mask_tok} in the text: {text!r}")
    with torch.no_grad():
        logits = model(ids, labels_mask=sel).logits  # (N, V)
    probs = logits.float().softmax(-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [[{"token": tok.convert_ids_to_tokens(int(i)), "id": int(i), "score": round(float(s), 5)}
             for s, i in zip(top.values[m], top.indices[m])] for m in range(probs.shape[0])]


def run(args: argparse.Namespace) -> int:
    from plmkit.cli.generate import resolve_tokenizer
    from plmkit.errors import UserError
    from plmkit.models import load

    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    tok = resolve_tokenizer(args.model, args.tokenizer)
    model = load(args.model).eval()
    if model.config.head != "mlm":
        raise UserError(f"{args.model}: the model has no MLM head (head={model.config.head!r}); fill-mask needs "
                        "a masked language model")
    from plmkit.textio import read_stdin

    texts = [args.text] if args.text not in (None, "-") else [t for t in read_stdin().splitlines() if t.strip()]
    if not texts:
        raise UserError("no input text (give it as an argument or on stdin)")
    for text in texts:
        preds = fill_mask(model, tok, text, args.top_k)
        if args.json:
            print(json.dumps({"text": text, "masks": preds}, ensure_ascii=False))
            continue
        print(text)
        for m, options in enumerate(preds):
            print(f"  mask {m + 1}: " + "  ".join(f"{o['token']} ({o['score']:.3f})" for o in options))
    return 0
