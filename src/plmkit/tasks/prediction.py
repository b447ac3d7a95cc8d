"""``plm predict``: a fine-tuned checkpoint over unlabelled inputs, one JSONL line per input."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import plmkit.tasks.encoding as E
from plmkit.errors import UserError
from plmkit.tasks.checkpoint import load_checkpoint, refuse_pair_scoring
from plmkit.tasks.data import encode
from plmkit.tasks.inference import run_model, softmax
from plmkit.tasks.readers import BadRows
from plmkit.tasks.specs import get_task, read_split
from plmkit.textio import read_text


def predict(path: str, inputs: str, out_path: str, batch_size: int = 64, skip_bad: bool = False,
            encoding_errors: str = "strict") -> dict[str, int]:
    """Predictions for every input row as JSONL (one line per input, in order; truncation flagged).

    ``out_path`` must not be a directory; ``batch_size`` must be positive (checked before anything runs)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size: expected a positive integer, got {batch_size!r}")
    out = Path(out_path)
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; expected the path of the JSONL file to write")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"--out {out}: {out.parent} is not a directory")
    bad = BadRows(skip=skip_bad, encoding_errors=encoding_errors)
    model, obj, info, tok = load_checkpoint(path)
    refuse_pair_scoring(info, path, "plm predict")
    spec = get_task(info["task"], **{k: v for k, v in info["spec"].items() if v is not None})
    inp = Path(inputs)
    if spec.kind in ("classification", "regression", "multilabel") and inp.suffix == ".txt":
        from plmkit.tasks.readers import TextExample

        if not inp.is_file():
            raise UserError(f"{inp}: no such file")
        lines = read_text(inp, encoding_errors).splitlines()
        examples = [TextExample(t, None, None, f"{inp}:{i}") for i, t in enumerate(lines, 1) if t.strip()]
        if not examples:
            raise UserError(f"{inp}: empty file (no lines)")
    else:
        examples = read_split(spec, inp, "dev", bad, labelled=False) if spec.kind != "qa" else read_split(spec, inp, "dev", bad)
    if hasattr(obj, "encode_examples"):  # a --verbalizer checkpoint encodes its pattern
        feats = obj.encode_examples(tok, examples, info["labels"], info["max_seq_len"], labelled=False)
    else:
        feats = encode(spec, tok, examples, info["labels"], info["max_seq_len"], False, info["doc_stride"])
    outputs = run_model(model, obj, feats, batch_size)
    labels = info["labels"]
    n_trunc = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        if spec.kind == "qa":
            answers = E.decode_qa(examples, feats, [o[0] for o in outputs], [o[1] for o in outputs])
            for e in examples:
                fh.write(json.dumps({"id": e.id, "source": e.source, "answer": answers.get(e.id, "")}) + "\n")
        else:
            tags = E.decode_tokens(feats, outputs, labels) if spec.kind == "token" else None
            for i, (e, f, o) in enumerate(zip(examples, feats, outputs)):
                rec: dict[str, Any] = {"source": e.source, "truncated": bool(f.get("truncated"))}
                n_trunc += rec["truncated"]
                if spec.kind == "classification":
                    p = softmax(np.asarray(o))
                    rec.update(label=labels[int(p.argmax())], probs={lab: round(float(x), 6) for lab, x in zip(labels, p)})
                elif spec.kind == "regression":
                    rec["score"] = float(o)
                elif spec.kind == "multilabel":
                    rec["labels"] = [lab for lab, x in zip(labels, np.asarray(o)) if x > 0]
                elif spec.kind == "multiple_choice":
                    rec.update(choice=int(np.argmax(o)), probs=[round(float(x), 6) for x in softmax(np.asarray(o))])
                elif spec.kind == "token":
                    rec.update(tokens=e.tokens, tags=tags[i])
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return {"inputs": len(examples), "written": len(examples), "truncated": n_trunc, "skipped_bad_rows": bad.count}
