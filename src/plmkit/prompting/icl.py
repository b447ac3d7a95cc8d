"""In-context evaluation: seeded demonstrations, label scoring, contextual calibration, metrics.

For each template, shot count k and demonstration seed: k demonstrations are drawn from the
training split (``random.Random(seed)``; ``balanced``: as equal a number per class as k allows),
the same for every eval example, and each label's verbalizer continuation is scored after
``instruction + demonstrations + query``. When a prompt exceeds ``max_length`` tokens the earliest
demonstrations are dropped whole until it fits; every prediction records how many were used.

Scores (``score``): ``sum`` = log p(verbalizer tokens | prompt); ``mean`` = that divided by the
number of tokens; ``pmi`` = sum minus log p(verbalizer | the same demonstrations + the template with
empty input), the domain-conditional PMI of Holtzman et al. 2021.

``calibrate`` (Zhao et al. 2021): the label probabilities (softmax of the scores over the labels) of
the content-free inputs "N/A", "" and "[MASK]" are averaged into p_cf, and each example's label
probabilities are divided by p_cf (W = diag(p_cf)^-1, b = 0) before the argmax.
Both raw and calibrated predictions are kept, so one run reports both.

Resuming (``RunStore``): each finished (template, shots, seed) run is written at once, atomically, to
``OUT/runs/<template>.<k>shot.seed<s>.json`` with its per-example records and the settings it was
computed under (``settings``: model, tokenizer, task, a digest of the train / eval examples, scoring,
balance, chat template, length limit, batch size, prefix sharing, precision; plus the run's template
content). A later call with the same settings reuses those runs instead of scoring them again, so the
final metrics and predictions are the same whether or not the evaluation was interrupted; a stored
run made under other settings is refused (``--overwrite`` discards the stored runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from plmkit import progress
from plmkit.errors import UserError
from plmkit.prompting.chat import render_chat
from plmkit.prompting.scoring import aggregate, continuation_logprobs, encode_prefix
from plmkit.prompting.templates import Template

CONTENT_FREE = ("N/A", "", "[MASK]")
SCORES = ("sum", "mean", "pmi")
SCORE_TEXT = {
    "sum": "sum of the verbalizer tokens' log-probabilities after the prompt",
    "mean": "mean per-token log-probability of the verbalizer tokens after the prompt",
    "pmi": "domain-conditional PMI: sum log p(verbalizer | prompt) - sum log p(verbalizer | demonstrations + "
           "template with empty input)",
}
_MARK = "\x00QUERY\x00"


@dataclass
class ICLSettings:
    shots: list[int]
    seeds: int = 5
    balanced: bool = False
    score: str = "sum"
    chat_template: str | None = None
    max_length: int | None = None
    batch_size: int = 8
    share_prefix: bool = True
    single_token: bool = False
    metrics: tuple[str, ...] = ("accuracy",)
    positive_label: str | None = None


def sample_demonstrations(train: Sequence[Any], k: int, seed: int, labels: Sequence[str],
                          balanced: bool = False) -> list[Any]:
    """k training examples for ``seed`` (class-balanced: k split as evenly as possible over ``labels``)."""
    if k == 0:
        return []
    rng = random.Random(seed)
    if not balanced:
        if k > len(train):
            raise UserError(f"--shots {k} is more than the {len(train)} training examples")
        return rng.sample(list(train), k)
    by_label = {lab: [e for e in train if e.label == lab] for lab in labels}
    order = list(labels)
    rng.shuffle(order)
    want = {lab: k // len(labels) + (1 if i < k % len(labels) else 0) for i, lab in enumerate(order)}
    for lab in labels:
        if want[lab] > len(by_label[lab]):
            raise UserError(f"--shots {k} with --balanced needs {want[lab]} training examples of class {lab!r}, "
                            f"but the training split has {len(by_label[lab])}")
    demos = [e for lab in labels for e in rng.sample(by_label[lab], want[lab])]
    rng.shuffle(demos)
    return demos


def shared_prefix(pre: list[int], fulls) -> list[int]:
    """``pre`` cut back to where every prompt in ``fulls`` still agrees with it, leaving each prompt at least
    one token of its own (the position whose next-token scores are read)."""
    n = len(pre)
    for f in fulls:
        j = 0
        while j < min(n, len(f)) and f[j] == pre[j]:
            j += 1
        n = min(n, j, len(f) - 1)
    return pre[:max(n, 0)]


class PromptBuilder:
    """Token ids of (prefix, query) for a template, its demonstrations and an example; chat-wrapped if asked."""

    def __init__(self, tokenizer, template: Template, chat_template: str | None = None) -> None:
        self.tok, self.t, self.chat = tokenizer, template, chat_template
        bos = tokenizer.special_tokens.get("bos") if hasattr(tokenizer, "special_tokens") else None
        probe = tokenizer.encode("a")
        bos_id = tokenizer.convert_tokens_to_ids(bos) if bos else None
        self.bos = [bos_id] if bos_id is not None and chat_template is None and probe[:1] == [bos_id] else []
        strip = chat_template is not None  # the assistant turn starts on a fresh line: no leading space
        self.verbal = {lab: (w.lstrip() if strip else w) for lab, w in template.verbalizer.items()}
        self.cont_ids = {lab: self.encode(w) for lab, w in self.verbal.items()}
        self._prefix_cache: dict[tuple, tuple[list[int], str]] = {}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def _split(self, demos: Sequence[Any]) -> tuple[str, str]:
        t = self.t
        parts = ([t.instruction] if t.instruction else []) + [
            t.demonstration(d.text, d.text_pair, d.label) for d in demos]
        body = t.separator.join(parts + [_MARK])
        if self.chat is not None:
            special = getattr(self.tok, "special_tokens", {})
            body = render_chat(self.chat, body, special)
        prefix, after = body.split(_MARK)
        return prefix, after

    def _prefix(self, demos: Sequence[Any]) -> tuple[list[int], str]:
        key = tuple(id(d) for d in demos)
        if key not in self._prefix_cache:
            prefix, after = self._split(demos)
            self._prefix_cache[key] = (self.bos + self.encode(prefix), after)
        return self._prefix_cache[key]

    def full(self, demos: Sequence[Any], text: str, text_pair: str | None) -> list[int]:
        """The whole prompt's token ids, tokenized in one piece (as a reference tokenizer would)."""
        body = self.t.separator.join(([self.t.instruction] if self.t.instruction else []) + [
            self.t.demonstration(d.text, d.text_pair, d.label) for d in demos] + [self.t.fill(text, text_pair)])
        if self.chat is not None:
            body = render_chat(self.chat, body, getattr(self.tok, "special_tokens", {}))
        return self.bos + self.encode(body)

    def prefix(self, demos: Sequence[Any], fulls: Sequence[Sequence[int]] = ()) -> list[int]:
        """The token ids shared by the prompts ``fulls`` built on ``demos``: the demonstrations' tokens, cut
        back to where every prompt still agrees (BPE may merge the last separator with the query's first
        characters, so the prefix is never tokenized apart from what follows it)."""
        return shared_prefix(self._prefix(demos)[0], fulls)

    def check_single_token(self) -> None:
        for lab, ids in self.cont_ids.items():
            if len(ids) != 1:
                pieces = self.tok.convert_ids_to_tokens(ids)
                raise UserError(f"{self.t.source}: verbalizer {self.verbal[lab]!r} of label {lab!r} is {len(ids)} tokens "
                                f"{pieces}, but --single-token needs one; drop --single-token to score multi-token "
                                "verbalizers (--score sum|mean|pmi)")


def _label_scores(logprobs: list[list[float]], labels: Sequence[str], how: str) -> np.ndarray:
    return np.array([aggregate(logprobs[j], "sum" if how == "pmi" else how) for j in range(len(labels))])


def _normalise(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max()
    p = np.exp(z)
    return p / p.sum()


def compute_metrics(preds: Sequence[str], gold: Sequence[str], names: Sequence[str],
                    positive_label: str | None) -> dict[str, float]:
    from plmkit.tasks import metrics as M

    out = {}
    for n in names:
        if n == "accuracy":
            out[n] = M.accuracy(preds, gold)
        elif n == "f1":
            out[n] = M.f1(preds, gold, average="binary", pos_label=positive_label)
        elif n == "f1_macro":
            out[n] = M.f1(preds, gold, average="macro")
        elif n == "mcc":
            out[n] = M.matthews_corrcoef(preds, gold)
    return out


def run_one(model, builder: PromptBuilder, demos: list[Any], examples: Sequence[Any], labels: Sequence[str],
            s: ICLSettings) -> list[dict]:
    """Score every example with ``demos`` (left-truncated per example when too long). One dict per example."""
    conts = [builder.cont_ids[lab] for lab in labels]
    longest = max(len(c) for c in conts)
    limit = s.max_length
    groups: dict[int, list[int]] = {}
    fulls: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        n = len(demos)
        while True:
            full = builder.full(demos[len(demos) - n:], ex.text, ex.text_pair)
            if limit is None or len(full) + longest - 1 <= limit or n == 0:
                break
            n -= 1
        if limit is not None and len(full) + longest - 1 > limit:
            raise UserError(f"{ex.source}: the prompt is {len(full) + longest - 1} tokens without any "
                            f"demonstration, more than --max-length {limit}")
        fulls[i] = full
        groups.setdefault(n, []).append(i)
    records: list[dict] = [None] * len(examples)  # type: ignore[list-item]
    pair = "text_pair" in builder.t.slots
    for n, idx in sorted(groups.items()):
        d = demos[len(demos) - n:]
        # content-free queries: calibration ("N/A", "", "[MASK]"); the "" one is also the PMI premise
        cf = [builder.full(d, c, c if pair else None) for c in CONTENT_FREE]
        seqs = [fulls[i] for i in idx] + cf
        prefix = builder.prefix(d, seqs)
        items = [(x[len(prefix):], conts) for x in seqs]
        enc = encode_prefix(model, prefix) if s.share_prefix and prefix else None
        lp = continuation_logprobs(model, prefix, items, s.batch_size, s.share_prefix, enc)
        cf_lp = lp[len(idx):]
        cf_scores = [_label_scores(x, labels, s.score) for x in cf_lp]
        null = cf_scores[CONTENT_FREE.index("")]
        if s.score == "pmi":
            cf_scores = [c - null for c in cf_scores]
        p_cf = np.mean([_normalise(c) for c in cf_scores], axis=0)
        for i, x in zip(idx, lp[: len(idx)]):
            sc = _label_scores(x, labels, s.score)
            if s.score == "pmi":
                sc = sc - null
            p = _normalise(sc)
            cal = p / p_cf
            records[i] = {
                "index": i, "source": examples[i].source, "label": examples[i].label,
                "prediction": labels[int(np.argmax(sc))],
                "calibrated_prediction": labels[int(np.argmax(cal))],
                "scores": {lab: round(float(v), 6) for lab, v in zip(labels, sc)},
                "demonstrations_used": n, "demonstrations_requested": len(demos),
                "prompt_tokens": len(fulls[i]), "shared_prefix_tokens": len(prefix),
            }
    return records


def examples_digest(examples: Sequence[Any]) -> str:
    """sha256 of the examples' texts and labels, in order (identifies the data a run saw)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.text, getattr(e, "text_pair", None), e.label]).encode("utf-8"))
    return h.hexdigest()


def template_content(t: Template) -> dict:
    """What of a template changes the scores (its file path does not)."""
    return {"name": t.name, "instruction": t.instruction, "template": t.template, "verbalizer": t.verbalizer,
            "separator": t.separator}


class RunStore:
    """The finished runs of one output directory, one JSON file each under ``DIR/runs/`` (see the module
    docstring). ``settings``: everything besides the template, shots and seed that a run's results depend
    on; a stored run is reused only when its settings and template content equal the current ones."""

    def __init__(self, out: Path, settings: dict, overwrite: bool = False) -> None:
        self.dir = Path(out) / "runs"
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON
        self.reused = 0
        if overwrite and self.dir.is_dir():
            for f in [*self.dir.glob("*.json"), *self.dir.glob("*.json.tmp")]:
                f.unlink()
        self.check()

    def _path(self, template: str, shots: int, seed: int | None) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", template)
        return self.dir / f"{safe}.{shots}shot.seed{'-' if seed is None else seed}.json"

    def _read(self, f: Path) -> dict:
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{f}: unreadable stored run ({e}); pass --overwrite to discard the stored runs") from None
        if not isinstance(d, dict) or not {"settings", "template", "run", "records"} <= set(d):
            raise UserError(f"{f}: not a stored plm icl run; pass --overwrite to discard the stored runs")
        return d

    def _refuse(self, f: Path, what: str, stored: Any, now: Any) -> None:
        raise UserError(f"{f.parent.parent}: holds runs made with {what} {stored!r}, this call has {now!r}; use "
                        "another --out, or --overwrite to discard the stored runs")

    def _differs(self, f: Path, d: dict) -> None:
        for key in sorted(set(self.settings) | set(d["settings"])):
            if d["settings"].get(key) != self.settings.get(key):
                self._refuse(f, key, d["settings"].get(key), self.settings.get(key))

    def check(self) -> None:
        """Refuse (UserError) when a stored run was made under other settings."""
        if self.dir.is_dir():
            for f in sorted(self.dir.glob("*.json")):
                self._differs(f, self._read(f))

    def load(self, template: Template, shots: int, seed: int | None) -> tuple[dict, list[dict]] | None:
        """(run summary, records) of a stored run of these settings, or None."""
        f = self._path(template.name, shots, seed)
        if not f.is_file():
            return None
        d = self._read(f)
        self._differs(f, d)
        want = json.loads(json.dumps(template_content(template)))
        if d["template"] != want:
            self._refuse(f, f"template {template.name!r} =", d["template"], want)
        self.reused += 1
        return d["run"], d["records"]

    def save(self, template: Template, shots: int, seed: int | None, run: dict, records: list[dict]) -> None:
        """Write one finished run atomically (a temporary file renamed over the final name)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        f = self._path(template.name, shots, seed)
        tmp = f.with_name(f.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"settings": self.settings, "template": template_content(template), "shots": shots,
                       "seed": seed, "run": run, "records": records}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(f)


def _summary(values: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in values[0]:
        v = np.array([x[name] for x in values], dtype=float)
        out[name] = float(v.mean())
        out[f"{name}_std"] = float(v.std())
        out[f"{name}_min"] = float(v.min())
    out["runs"] = len(values)
    return out


def evaluate_icl(model, tokenizer, templates: Sequence[Template], train: Sequence[Any], examples: Sequence[Any],
                 labels: Sequence[str], s: ICLSettings, predictions_path: Path | None = None,
                 log=print, store: RunStore | None = None) -> dict:
    """Run every (template, shots, seed); return the metrics dict written to metrics.json.

    ``store``: reuse the runs it holds and save each new run as soon as it finishes. ``predictions_path``
    is written (atomically) once every run is done."""
    if s.score not in SCORES:
        raise UserError(f"--score {s.score!r}: expected one of {', '.join(SCORES)}")
    builders = [PromptBuilder(tokenizer, t, s.chat_template) for t in templates]
    if s.single_token:
        for b in builders:
            b.check_single_token()
    plans = []
    for k in s.shots:
        for seed in (range(s.seeds) if k > 0 else [0]):
            plans.append((k, seed, sample_demonstrations(train, k, seed, labels, s.balanced)))
    runs, truncated, lines = [], 0, []
    for b in builders:
        for k, seed, demos in plans:
            progress.stage(f"at template {b.t.name}, {k} shots, seed {seed if k > 0 else '-'} "
                           f"(run {len(runs) + 1} of {len(builders) * len(plans)})")
            t, cpu = time.perf_counter(), time.process_time()
            key = (b.t, k, seed if k > 0 else None)
            stored = store.load(*key) if store is not None else None
            if stored is not None:
                run, recs = stored
            else:
                recs = run_one(model, b, demos, examples, labels, s)
                gold = [r["label"] for r in recs]
                raw = compute_metrics([r["prediction"] for r in recs], gold, s.metrics, s.positive_label)
                cal = compute_metrics([r["calibrated_prediction"] for r in recs], gold, s.metrics, s.positive_label)
                run = {"template": b.t.name, "shots": k, "seed": seed if k > 0 else None, "metrics": raw,
                       "calibrated_metrics": cal, "examples_truncated": sum(r["demonstrations_used"] < k for r in recs),
                       "seconds": round(time.perf_counter() - t, 2),
                       "cpu_seconds": round(time.process_time() - cpu, 2)}
                if store is not None:
                    store.save(*key, run, recs)
            runs.append(run)
            cut = run["examples_truncated"]
            truncated += cut
            log(f"template {b.t.name} shots {k} seed {seed if k > 0 else '-'}: "
                + ", ".join(f"{m} {v:.4f}" for m, v in run["metrics"].items()) + " | calibrated "
                + ", ".join(f"{m} {v:.4f}" for m, v in run["calibrated_metrics"].items())
                + (f" | {cut} examples truncated" if cut else "")
                + (" (stored run reused)" if stored is not None else f" ({time.perf_counter() - t:.1f}s)"))
            if predictions_path:
                lines += [json.dumps({"template": b.t.name, "shots": k, "seed": seed if k > 0 else None, **r})
                          for r in recs]
    if predictions_path:
        tmp = Path(predictions_path).with_name(Path(predictions_path).name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(predictions_path)

    def by(key: str, runs_: list[dict]) -> dict:
        out = {}
        for k in s.shots:
            sel = [r[key] for r in runs_ if r["shots"] == k]
            if sel:
                out[str(k)] = _summary(sel)
        return out

    return {
        "by_shots": by("metrics", runs),
        "calibrated_by_shots": by("calibrated_metrics", runs),
        "by_template": {b.t.name: {"raw": by("metrics", [r for r in runs if r["template"] == b.t.name]),
                                   "calibrated": by("calibrated_metrics",
                                                    [r for r in runs if r["template"] == b.t.name])}
                        for b in builders},
        "scoring": {"score": s.score, "description": SCORE_TEXT[s.score],
                    "calibration": "contextual calibration (Zhao et al. 2021): label probabilities divided by their "
                                   f"mean over content-free inputs {list(CONTENT_FREE)}",
                    "aggregate": "mean, std (population, ddof=0) and min over demonstration seeds and templates; "
                                 "0 shots has one run per template",
                    "chat": s.chat_template is not None, "balanced": s.balanced,
                    "demonstrations": "drawn from the training split only, seeded with random.Random(seed)"},
        "templates": {b.t.name: {"source": b.t.source, "verbalizer": b.verbal,
                                 "verbalizer_tokens": {lab: len(v) for lab, v in b.cont_ids.items()}}
                      for b in builders},
        "shots": list(s.shots), "seeds": s.seeds, "n_eval": len(examples), "n_train": len(train),
        "max_length": s.max_length, "examples_truncated": truncated,
        "runs": runs, "seconds": round(sum(r["seconds"] for r in runs), 1),
        "cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in runs), 1),
    }


def prefix_cache_benchmark(model, builder: PromptBuilder, demos: list[Any], examples: Sequence[Any],
                           labels: Sequence[str], batch_size: int) -> dict:
    """Time scoring ``examples`` after ``demos`` with the shared prefix cache vs re-encoding the prefix per row."""
    import torch

    conts = [builder.cont_ids[lab] for lab in labels]
    fulls = [builder.full(demos, e.text, e.text_pair) for e in examples]
    prefix = builder.prefix(demos, fulls)
    items = [(f[len(prefix):], conts) for f in fulls]
    torch.manual_seed(0)
    continuation_logprobs(model, prefix, items[:1], batch_size, True)  # warm-up
    t = time.perf_counter()
    a = continuation_logprobs(model, prefix, items, batch_size, True)
    cached = time.perf_counter() - t
    t = time.perf_counter()
    b = continuation_logprobs(model, prefix, items, batch_size, False)
    uncached = time.perf_counter() - t
    diff = max(abs(x - y) for ia, ib in zip(a, b) for ja, jb in zip(ia, ib) for x, y in zip(ja, jb))
    return {"examples": len(examples), "shots": len(demos), "template": builder.t.name,
            "prefix_tokens": len(prefix), "mean_query_tokens": float(np.mean([len(q) for q, _ in items])),
            "batch_size": batch_size, "seconds_shared_prefix": round(cached, 3),
            "seconds_reencoded_prefix": round(uncached, 3), "speedup": round(uncached / cached, 2),
            "max_abs_logprob_diff": diff}
