"""CounterFact and zsRE evaluation of an editing method (ROME's definitions, on the EasyEdit fields).

CounterFact (``prompt``, ``subject``, ``target_new``, ``ground_truth``, ``rephrase_prompt``,
``locality_prompt``, ``locality_ground_truth``), with full log-probabilities of the object strings
(the sum over the tokens of " " + object after the prompt):
- ES (efficacy score): fraction of cases with P(new) > P(true) on the prompt; EM (efficacy magnitude):
  mean of P(new) - P(true) there;
- PS / PM: the same on the rephrased prompt;
- NS (neighborhood score): fraction of locality prompts (another subject with the true object) where
  P(true) > P(new) still holds; NM: mean of P(true) - P(new) there;
- S: harmonic mean of ES, PS, NS;
- fluency: ROME's generation entropy: a continuation of the prompt is sampled (top-k 5, ``fluency_tokens``
  new tokens, the same seed before and after the edit) and scored by the weighted mean of its bi- and
  tri-gram entropies (weights 2/3 and 4/3, bits, over lower-cased words). ROME's tables print 100 x it.

zsRE (``src``, ``subject``, ``alt``, ``answers``, ``rephrase``, ``loc``, ``loc_ans``): ROME's Table 1:
efficacy / paraphrase = teacher-forced token accuracy of the new answer ``alt`` after the question /
its rephrasing; specificity = token accuracy of ``loc_ans`` after ``loc``.

Every score is reported for the unedited model and after the edit (each case edited, measured and
undone, or ``batch_size`` cases at once).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from plmkit.errors import UserError
from plmkit.knowledge.edit import common, edit, edit_each, undo
from plmkit.knowledge.structure import ModelStructure
from plmkit.textio import read_json

CF_KEYS = ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt", "locality_prompt",
           "locality_ground_truth")
ZSRE_KEYS = ("src", "subject", "alt", "answers", "rephrase", "loc", "loc_ans")


@dataclass
class Case:
    id: Any
    request: common.Request
    rephrase: str
    locality: str
    locality_target: str


def read_cases(path: str | Path, n: int | None = None, start: int = 0) -> tuple[str, list[Case], list[dict]]:
    """("counterfact" | "zsre", cases, skipped [{id, reason}]): ``n`` records of the file from index ``start``.

    Records a method cannot edit (subject not in the prompt, empty or unchanged target) are skipped
    and counted, never dropped silently."""
    path = Path(path)
    rows = read_json(path, "data file")
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        raise UserError(f"{path}: expected a JSON list of CounterFact or zsRE records")
    kind = "counterfact" if "rephrase_prompt" in rows[0] else "zsre" if "src" in rows[0] else None
    if kind is None:
        raise UserError(f"{path}: record 0 is neither CounterFact (EasyEdit: {', '.join(CF_KEYS)}) "
                        f"nor zsRE ({', '.join(ZSRE_KEYS)})")
    keys = CF_KEYS if kind == "counterfact" else ZSRE_KEYS
    cases, skipped = [], []
    for k, r in enumerate(rows[start: start + n] if n else rows[start:], start=start):
        missing = [x for x in keys if not isinstance(r, dict) or x not in r]
        if missing:
            raise UserError(f"{path}: record {k}: missing key(s) {', '.join(missing)}")
        if kind == "counterfact":
            cid = r.get("case_id", k)
            req = common.Request(r["prompt"], r["subject"], r["target_new"], r["ground_truth"])
            case = Case(cid, req, r["rephrase_prompt"], r["locality_prompt"], r["locality_ground_truth"])
        else:
            cid = k
            true = r["answers"][0] if isinstance(r["answers"], list) and r["answers"] else r.get("pred")
            req = common.Request(r["src"], r["subject"], r["alt"], true)
            case = Case(cid, req, r["rephrase"], r["loc"], r["loc_ans"])
        try:
            req.validate(f"{path}: record {k}")
        except UserError as e:
            skipped.append({"id": cid, "reason": str(e)})
            continue
        cases.append(case)
    return kind, cases, skipped


# ------------------------------------------------------------------------------------------ scores
ROWS_PER_FORWARD = 96
"""Scoring rows (prompt + object) per batched forward."""


def _chunks(seq: list, n: int) -> list[list]:
    return [seq[i: i + n] for i in range(0, len(seq), n)]


class RowDeltas:
    """Batched forwards of the unedited model in which each row sees its own case's edited weights.

    ``deltas[c]``: the exact change (``Delta.delta``: parameter name -> new - old) of case c's edit,
    which has been undone; only FFN value matrices (``down``) may be in it (every method here edits
    only those). Inside ``with rd.rows(case_of_row):`` a forward hook on each changed ``down`` adds
    ``x_b ΔW_c^T`` to row b's output, c = ``case_of_row[b]``: row b computes ``W x + ΔW_c x``, the
    edited model's ``W' x`` up to float rounding (tested against editing, scoring and undoing one case
    at a time). This lets the edited scores and fluency samples of many one-at-a-time edits share
    batched forwards and one decode."""

    def __init__(self, struct: ModelStructure, deltas: list[dict[str, torch.Tensor]]) -> None:
        by_name: dict[str, torch.nn.Module] = {}
        for layer in range(struct.num_layers):
            m = struct.down(layer)
            by_name.setdefault(common.param_name(struct.model, m.weight), m)
        self.entries: dict[int, tuple[torch.nn.Module, list[tuple[int, torch.Tensor]]]] = {}
        for c, d in enumerate(deltas):
            for name, D in d.items():
                if name not in by_name:
                    raise ValueError(f"RowDeltas: {name} is not an FFN value matrix (down)")
                m = by_name[name]
                self.entries.setdefault(id(m), (m, []))[1].append((c, D))
        self.case: torch.Tensor | None = None

    @contextlib.contextmanager
    def rows(self, case_of_row: list[int]) -> Iterator[None]:
        self.case = torch.tensor(case_of_row, dtype=torch.long)
        handles = [m.register_forward_hook(self._hook(items)) for m, items in self.entries.values()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self.case = None

    def _hook(self, items: list[tuple[int, torch.Tensor]]) -> Callable:
        def add(mod: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            x = args[0]
            if x.shape[0] != len(self.case):
                raise RuntimeError(f"RowDeltas: {x.shape[0]} rows in the forward, {len(self.case)} cases given")
            for c, D in items:
                idx = (self.case == c).nonzero().flatten()
                if len(idx):
                    out = out.index_add(0, idx, (x[idx].to(D.dtype) @ D.T).to(out.dtype))
            return out
        return add


def _rows(rd: RowDeltas | None, case_of_row: list[int]) -> Any:
    return rd.rows(case_of_row) if rd is not None else contextlib.nullcontext()


@torch.no_grad()
def counterfact_scores_many(struct: ModelStructure, tok: Any, cases: list[Case],
                            rd: RowDeltas | None = None) -> list[dict[str, Any]]:
    """ES / EM, PS / PM, NS / NM and the six log-probabilities of each case (batched forwards;
    ``rd``: case i scored under its own edit, see ``RowDeltas``)."""
    prompts, targets = [], []
    for c in cases:
        r = c.request
        new, true = common.target_ids(tok, r.target_new), common.target_ids(tok, r.target_true)
        loc_true = common.target_ids(tok, c.locality_target)
        p = [common.encode(tok, x).ids for x in (r.prompt, c.rephrase, c.locality)]
        prompts += [p[0], p[0], p[1], p[1], p[2], p[2]]
        targets += [new, true, new, true, new, loc_true]
    lp: list[float] = []
    for k, (ps, ts) in enumerate(zip(_chunks(prompts, ROWS_PER_FORWARD), _chunks(targets, ROWS_PER_FORWARD))):
        with _rows(rd, [(k * ROWS_PER_FORWARD + j) // 6 for j in range(len(ps))]):
            lp += common.target_logprobs(struct, ps, ts).tolist()
    out = []
    for i in range(len(cases)):
        x = lp[6 * i: 6 * i + 6]
        p = [math.exp(v) for v in x]
        out.append({"es": float(x[0] > x[1]), "em": p[0] - p[1], "ps": float(x[2] > x[3]), "pm": p[2] - p[3],
                    "ns": float(x[5] > x[4]), "nm": p[5] - p[4],
                    "logp": {"prompt_new": x[0], "prompt_true": x[1], "rephrase_new": x[2], "rephrase_true": x[3],
                             "locality_new": x[4], "locality_true": x[5]}})
    return out


@torch.no_grad()
def zsre_scores_many(struct: ModelStructure, tok: Any, cases: list[Case],
                     rd: RowDeltas | None = None) -> list[dict[str, float]]:
    prompts, targets = [], []
    for c in cases:
        new, loc = common.target_ids(tok, c.request.target_new), common.target_ids(tok, c.locality_target)
        prompts += [common.encode(tok, p).ids for p in (c.request.prompt, c.rephrase, c.locality)]
        targets += [new, new, loc]
    acc: list[float] = []
    for k, (ps, ts) in enumerate(zip(_chunks(prompts, ROWS_PER_FORWARD), _chunks(targets, ROWS_PER_FORWARD))):
        with _rows(rd, [(k * ROWS_PER_FORWARD + j) // 3 for j in range(len(ps))]):
            acc += common.target_token_accuracy(struct, ps, ts)
    return [{"efficacy": acc[3 * i], "paraphrase": acc[3 * i + 1], "specificity": acc[3 * i + 2]}
            for i in range(len(cases))]


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """ROME's generation entropy: mean over n of weight_n x the entropy (bits) of the n-gram frequencies."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    vals = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(words[i: i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        vals.append(w * h)
    return sum(vals) / len(vals)


@torch.no_grad()
def sample_continuations(struct: ModelStructure, tok: Any, prompts: list[str], tokens: int,
                         seeds: list[int], rd: RowDeltas | None = None, cases: list[int] | None = None
                         ) -> list[str]:
    """``tokens`` tokens sampled (top-k 5, no stop at EOS, as ROME's fluency samples) after each prompt.

    One batched decode with a KV cache over the left-padded prompts; row b draws from its own RNG
    seeded ``seeds[b]``, so a row's text does not depend on the batch it is decoded in (up to the
    rounding of batched vs. single forwards). Few-row linears use the cached transposed weights
    (``plmkit.models.kernels.decoding_weights``), refreshed when an edit changes a weight. ``rd``: row b
    decodes under the edit of case ``cases[b]`` (``RowDeltas``)."""
    from plmkit.models.cache import KVCache
    from plmkit.models.kernels import decoding_weights

    model = struct.model
    encs = [common.encode(tok, p).ids for p in prompts]
    B, T = len(encs), max(len(e) for e in encs)
    ids = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, e in enumerate(encs):
        ids[b, T - len(e):] = torch.tensor(e)
        mask[b, T - len(e):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0) + int(getattr(model.config, "position_offset", 0) or 0)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    cache = KVCache.for_model(model, B, T + tokens)
    last = torch.zeros_like(ids, dtype=torch.bool)
    last[:, -1] = True
    new = torch.empty((B, tokens), dtype=torch.long)
    with decoding_weights(model, True), _rows(rd, cases if cases is not None else list(range(B))):
        logits = model(ids, attention_mask=mask, position_ids=pos, past_key_values=cache, labels_mask=last).logits
        for step in range(tokens):
            top = logits.float().topk(min(5, logits.shape[-1]), dim=-1)
            probs = top.values.softmax(-1)
            for b in range(B):
                new[b, step] = top.indices[b, torch.multinomial(probs[b], 1, generator=gens[b])]
            if step + 1 == tokens:
                break
            mask = torch.cat((mask, mask.new_ones(B, 1)), 1)
            pos = pos[:, -1:] + 1
            logits = model(new[:, step: step + 1], attention_mask=mask, position_ids=pos, past_key_values=cache,
                           labels_mask=torch.ones((B, 1), dtype=torch.bool)).logits
    return [tok.decode(row.tolist()) for row in new]


def scores_many(kind: str, struct: ModelStructure, tok: Any, cases: list[Case], fluency_tokens: int,
                seed: int, rd: RowDeltas | None = None) -> list[dict[str, Any]]:
    """Every score of each case (batched forwards; fluency continuations decoded together).
    ``rd``: case i is scored under its own edit (``RowDeltas`` built from the cases' deltas, in order)."""
    if kind == "zsre":
        return zsre_scores_many(struct, tok, cases, rd)
    out = counterfact_scores_many(struct, tok, cases, rd)
    if fluency_tokens > 0:
        for part in _chunks(list(range(len(cases))), 64):
            texts = sample_continuations(struct, tok, [cases[i].request.prompt for i in part], fluency_tokens,
                                         [_seed(seed, cases[i].id) for i in part], rd, part)
            for i, text in zip(part, texts):
                out[i]["fluency"] = ngram_entropy(text)
                out[i]["generation"] = text
    return out


def harmonic(xs: list[float]) -> float:
    return 0.0 if any(x <= 0 for x in xs) else len(xs) / sum(1 / x for x in xs)


def summarize(kind: str, rows: list[dict[str, Any]]) -> dict[str, float | None]:
    def mean(k: str) -> float | None:
        vals = [r[k] for r in rows if r.get(k) is not None]
        return sum(vals) / len(vals) if vals else None

    if kind == "zsre":
        return {k: mean(k) for k in ("efficacy", "paraphrase", "specificity")}
    out = {k: mean(k) for k in ("es", "ps", "ns")}
    out["s"] = harmonic([out["es"], out["ps"], out["ns"]]) if rows else None
    out["fluency"] = mean("fluency")
    return out


def details(kind: str, rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The magnitudes (EM, PM, NM) and counts that metrics.json's fixed shape leaves out."""
    if kind == "zsre":
        return {"n": len(rows)}
    vals = {k: [r[k] for r in rows] for k in ("em", "pm", "nm")}
    return {**{k: (sum(v) / len(v) if v else None) for k, v in vals.items()}, "n": len(rows)}


def read_unedited(folder: str | Path, kind: str, model: str, data: str, fluency_tokens: int, seed: int,
                  cases: list[Case]) -> dict[Any, dict[str, Any]]:
    """The unedited scores of ``cases`` from an earlier ``plm edit --data`` output folder (its
    details.json and cases.jsonl), refused (UserError) unless it ran on the same model file, data file,
    fluency tokens and seed and holds every case with the same request. Runs written before the seed
    was recorded in details.json used the default seed 0."""
    import json

    folder = Path(folder)
    det, rows_path = folder / "details.json", folder / "cases.jsonl"
    if not det.is_file() or not rows_path.is_file():
        raise UserError(f"--unedited {folder}: expected the output folder of an earlier 'plm edit --data' run "
                        "(details.json and cases.jsonl)")
    d = read_json(det, "--unedited details.json")
    want = {"kind": kind, "model": str(model), "data": str(data), "fluency_tokens": fluency_tokens}
    for k, v in want.items():
        if d.get(k) != v:
            raise UserError(f"--unedited {det}: {k} is {d.get(k)!r}, this run's is {v!r}")
    if d.get("seed", 0) != seed:
        raise UserError(f"--unedited {det}: seed is {d.get('seed', 0)!r}, this run's is {seed!r}")
    by_id = {}
    for ln, line in enumerate(rows_path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                r = json.loads(line)
                by_id[r["id"]] = r
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"--unedited {rows_path}:{ln}: expected a JSON object with an id") from None
    out = {}
    for c in cases:
        r = by_id.get(c.id)
        if r is None:
            raise UserError(f"--unedited {rows_path}: case {c.id!r} is missing (it holds {len(by_id)} cases)")
        if r.get("request") != c.request.to_dict():
            raise UserError(f"--unedited {rows_path}: case {c.id!r} has another request than {data}")
        out[c.id] = r["unedited"]
    return out


PRE_BLOCK = 16
"""Cases whose unedited scores are computed together (the edits themselves go ``batch_size`` at a time);
with ``batch_size`` 1 also the cases whose edited scores share forwards (``RowDeltas``)."""

ROW_DELTAS = True
"""One edit at a time: score a block's edited cases together through ``RowDeltas`` (each edit undone
right after it is made); False: score each case on the edited model before undoing it."""


def run(kind: str, struct: ModelStructure, tok: Any, cases: list[Case], method: str, hparams: Any,
        cov: dict[int, torch.Tensor] | None, batch_size: int = 1, fluency_tokens: int = 100, seed: int = 0,
        log: Callable[[str], None] = print, on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
        unedited: dict[Any, dict[str, Any]] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, one row per case): unedited scores, edit (batch_size cases at once), edited scores, undo.

    With ``batch_size`` 1 (and ``ROW_DELTAS``) the cases go in blocks of ``PRE_BLOCK``: each case is
    edited alone and undone, keeping its exact delta (``edit_each``: ROME's keys and v* of the block
    share forwards), then the block's edited scores and fluency samples are computed together, row b
    of every forward seeing its own case's edit (``RowDeltas``). ``on_rows`` receives the rows so far
    after every batch / block (``plm edit`` keeps ``cases.jsonl`` current with it, so an interrupted
    run keeps its finished cases). ``unedited``: case id -> unedited scores from an earlier run on the
    same model, data, fluency tokens and seed (``read_unedited``), used instead of recomputing them."""
    unedited = unedited or {}
    rows: list[dict[str, Any]] = []
    edit_seconds = 0.0
    pre_all: dict[int, dict[str, Any]] = {}
    per_row = batch_size == 1 and ROW_DELTAS
    block = batch_size * max(1, -(-PRE_BLOCK // batch_size))  # a multiple of batch_size
    step = block if per_row else batch_size
    for b in range(0, len(cases), step):
        if b % block == 0:  # the unedited scores of the next block of cases, batched
            nxt = [(b + i, c) for i, c in enumerate(cases[b: b + block])]
            pre_all.update((i, unedited[c.id]) for i, c in nxt if c.id in unedited)
            todo = [(i, c) for i, c in nxt if c.id not in unedited]
            if todo:
                pre_all.update(zip([i for i, _ in todo], scores_many(kind, struct, tok, [c for _, c in todo],
                                                                     fluency_tokens, seed)))
        done: list[tuple[list[Case], Any, float]] = []
        if per_row:  # each case edited alone (and undone), its exact delta kept
            part = cases[b: b + step]
            for c, delta in zip(part, edit_each(struct.model, [c.request for c in part], method, hparams,
                                                tokenizer=tok, covariance=cov)):
                done.append(([c], delta, delta.info["seconds"]))
                edit_seconds += delta.info["seconds"]
        else:
            chunk = cases[b: b + batch_size]
            t0 = time.time()
            delta = edit(struct.model, [c.request for c in chunk], method, hparams, tokenizer=tok, covariance=cov)
            dt = time.time() - t0
            edit_seconds += dt
            post = scores_many(kind, struct, tok, chunk, fluency_tokens, seed)
            undo(struct.model, delta)
            done.append((chunk, delta, dt))
        if per_row:
            flat = [c for chunk, _, _ in done for c in chunk]
            post = scores_many(kind, struct, tok, flat, fluency_tokens, seed,
                               RowDeltas(struct, [d.delta for _, d, _ in done]))
        k = 0
        for chunk, delta, dt in done:
            for i, c in enumerate(chunk):
                a, z = pre_all.pop(b + k), post[k]
                k += 1
                rows.append({"id": c.id, "request": c.request.to_dict(), "rephrase": c.rephrase,
                             "locality": c.locality, "locality_target": c.locality_target, "unedited": a,
                             "edited": z, "edit_seconds": round(dt / len(chunk), 3),
                             "edit_cpu_seconds": round(delta.info["cpu_seconds"] / len(chunk), 3),
                             "delta_norm": delta.info.get("delta_norm"),
                             "v_curve": _last_curve(delta.info, i)})
        head = ", ".join(f"{k} {v:.2f}" for k, v in summarize(kind, [r["edited"] for r in rows]).items()
                         if isinstance(v, float))
        if on_rows is not None:
            on_rows(rows)
        n_new, dt_new = sum(len(c) for c, _, _ in done), sum(d for _, _, d in done)
        log(f"[{len(rows)}/{len(cases)}] edited {n_new} in {dt_new:.1f}s; running edited: {head}")
    metrics = {"unedited": summarize(kind, [r["unedited"] for r in rows]),
               "edited": summarize(kind, [r["edited"] for r in rows]),
               "seconds_per_edit": edit_seconds / max(1, len(rows))}
    return metrics, rows


def _seed(seed: int, cid: Any) -> int:
    return seed + zlib.crc32(str(cid).encode()) % 100_000


def _last_curve(info: dict[str, Any], i: int) -> Any:
    curves = info.get("v_curve") or info.get("nll_curve")
    if isinstance(curves, list) and curves and isinstance(curves[0], list):
        return curves[i] if i < len(curves) else None
    return curves
