"""In-context multiple choice and short-answer generation (``plm icl --task multiple-choice|generation``).

Data (``--data DIR``): ``DIR/train.jsonl`` (demonstrations are drawn from it only) and ``DIR/dev.jsonl``
(evaluated), one JSON object a line:

- multiple choice: ``{"question": str, "options": [str, ...], "answer": int | str, "context": str}``
  (``answer``: the index of the right option, or its text; ``context`` optional);
- generation: ``{"question": str, "answers": [str, ...], "context": str}`` (or ``"answer": str``;
  ``context`` optional). A directory holding SQuAD's ``dev-v1.1.json`` instead is read as generation
  data: articles 0-35 give the demonstrations, articles 36- are evaluated (the split the ``squad`` task
  of ``plm finetune`` uses when only dev is present), so no demonstration comes from an evaluated article.

Templates (YAML, ``recipes/prompts/multiple-choice/``, ``recipes/prompts/generation/``)::

    name: qa
    instruction: ""                       # optional
    template: "Question: {question}\\nAnswer:"   # {question} required; {context} optional
    answer_prefix: " "                    # put between the template and an answer (default " ")
    separator: "\\n\\n"                     # between demonstrations (default "\\n\\n")

A demonstration is the filled template + ``answer_prefix`` + its answer (the right option's text).

Multiple choice: each option is scored like a verbalizer continuation, ``answer_prefix + option``
after the prompt (``sum`` / ``mean`` per token / ``pmi``: minus the option's log-probability after the
same demonstrations and the template with an empty question and context); the highest score wins;
metric ``accuracy``. Generation: greedy decoding after the prompt, up to ``max_new_tokens``, cut at the
first newline (and at EOS); metrics ``exact_match`` and ``f1`` of SQuAD's official script (lower-case,
no punctuation or articles; max over the gold answers). With a chat template the prompt is wrapped in
it and the answer prefix's leading spaces are dropped (the assistant turn starts a fresh line).
"""

from __future__ import annotations

import json
import random
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from plmkit.errors import UserError
from plmkit.prompting.chat import render_chat
from plmkit.prompting.scoring import continuation_logprobs, encode_prefix

KEYS = ("name", "task", "instruction", "template", "answer_prefix", "separator")
SLOTS = ("question", "context")
_MARK = "\x00QUERY\x00"


@dataclass
class QAExample:
    question: str
    answers: list[str]  # generation: the gold answers; multiple choice: [the right option's text]
    context: str = ""
    options: list[str] = field(default_factory=list)  # multiple choice only
    answer: int | None = None  # multiple choice: index of the right option
    source: str = ""


@dataclass
class QATemplate:
    name: str
    template: str
    instruction: str = ""
    answer_prefix: str = " "
    separator: str = "\n\n"
    source: str = ""

    def fill(self, ex_or_q: Any, context: str = "") -> str:
        if isinstance(ex_or_q, QAExample):
            return self.template.format(question=ex_or_q.question.strip(), context=ex_or_q.context.strip())
        return self.template.format(question=str(ex_or_q).strip(), context=context.strip())


def parse_qa_template(obj: object, source: str, task: str) -> QATemplate:
    if not isinstance(obj, dict):
        raise UserError(f"{source}: expected a mapping with keys {', '.join(KEYS)}, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        hint = " (multiple-choice / generation templates have no verbalizer: the options / answers are the " \
               "continuations)" if unknown[0] == "verbalizer" else ""
        raise UserError(f"{source}: unknown key {unknown[0]!r}; expected some of {', '.join(KEYS)}{hint}")
    tmpl = obj.get("template")
    if not isinstance(tmpl, str) or not tmpl.strip():
        raise UserError(f"{source}: key 'template' must be a non-empty string")
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(tmpl) if f is not None]
    except ValueError as e:
        raise UserError(f"{source}: key 'template' is not a valid format string ({e})") from None
    for n in names:
        if n not in SLOTS:
            raise UserError(f"{source}: key 'template': slot {{{n}}} is unknown for --task {task}; "
                            "expected {question} and optionally {context}")
    if "question" not in names:
        raise UserError(f"{source}: key 'template' has no input slot {{question}} (got {tmpl!r})")
    if obj.get("task") is not None and str(obj["task"]) != task:
        raise UserError(f"{source}: template is for task {obj['task']!r}, not {task!r}")
    for key in ("instruction", "separator", "name", "answer_prefix"):
        if key in obj and not isinstance(obj[key], str):
            raise UserError(f"{source}: key {key!r} must be a string")
    return QATemplate(name=obj.get("name") or Path(source).stem, template=tmpl,
                      instruction=obj.get("instruction", "") or "", answer_prefix=obj.get("answer_prefix", " "),
                      separator=obj.get("separator", "\n\n"), source=source)


def load_qa_templates(paths: list[str | Path], task: str) -> list[QATemplate]:
    from plmkit.prompting.templates import read_yaml, template_files

    out: list[QATemplate] = []
    for f in template_files(paths):
        t = parse_qa_template(read_yaml(f), str(f), task)
        if any(o.name == t.name for o in out):
            raise UserError(f"{f}: template name {t.name!r} is used twice; give each template its own 'name'")
        out.append(t)
    return out


# ------------------------------------------------------------------------------------------ data


def _str(obj: dict, key: str, where: str, required: bool = True) -> str:
    v = obj.get(key, None if required else "")
    if not isinstance(v, str) or (required and not v.strip()):
        raise UserError(f"{where}: key {key!r} must be a {'non-empty ' if required else ''}string, got {v!r}")
    return v


def read_qa_jsonl(path: Path, task: str) -> list[QAExample]:
    """Multiple-choice or generation examples from a JSONL file (see the module docstring)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file (--task {task} reads train.jsonl and dev.jsonl from --data)")
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        q, ctx = _str(obj, "question", where), _str(obj, "context", where, required=False)
        if task == "multiple-choice":
            opts = obj.get("options")
            if not isinstance(opts, list) or len(opts) < 2 or not all(isinstance(o, str) and o.strip() for o in opts):
                raise UserError(f"{where}: key 'options' must be a list of at least 2 non-empty strings, got {opts!r}")
            a = obj.get("answer")
            if isinstance(a, bool) or not isinstance(a, (int, str)):
                raise UserError(f"{where}: key 'answer' must be the right option's index or text, got {a!r}")
            if isinstance(a, str):
                if a not in opts:
                    raise UserError(f"{where}: answer {a!r} is not one of the options {opts}")
                a = opts.index(a)
            if not 0 <= a < len(opts):
                raise UserError(f"{where}: answer index {a} is out of range for {len(opts)} options")
            out.append(QAExample(q, [opts[a]], ctx, list(opts), a, where))
        else:
            if "answers" in obj:
                ans = obj["answers"]
                if not isinstance(ans, list) or not ans or not all(isinstance(x, str) and x.strip() for x in ans):
                    raise UserError(f"{where}: key 'answers' must be a non-empty list of non-empty strings, got {ans!r}")
            else:
                ans = [_str(obj, "answer", where)] if "answer" in obj else None
                if ans is None:
                    raise UserError(f"{where}: missing key 'answers' (a list of gold answers) or 'answer'")
            out.append(QAExample(q, list(ans), ctx, source=where))
    if not out:
        raise UserError(f"{path}: no examples")
    return out


SQUAD_DEMO_ARTICLES = 36


def read_qa_data(data: Path, task: str) -> tuple[list[QAExample], list[QAExample]]:
    """(train, dev) examples of ``--data`` for multiple-choice / generation."""
    if not data.is_dir():
        raise UserError(f"--data {data}: not a directory")
    squad = data / "dev-v1.1.json"
    if task == "generation" and not (data / "dev.jsonl").exists() and squad.is_file():
        from plmkit.tasks.readers import read_squad

        def conv(exs):
            return [QAExample(e.question, [a["text"] for a in e.answers], e.context, source=f"{squad}:{e.id}")
                    for e in exs if e.answers]

        return (conv(read_squad(squad, slice(0, SQUAD_DEMO_ARTICLES))),
                conv(read_squad(squad, slice(SQUAD_DEMO_ARTICLES, None))))
    return read_qa_jsonl(data / "train.jsonl", task), read_qa_jsonl(data / "dev.jsonl", task)


def sample_qa_demonstrations(train: Sequence[QAExample], k: int, seed: int) -> list[QAExample]:
    if k == 0:
        return []
    if k > len(train):
        raise UserError(f"--shots {k} is more than the {len(train)} training examples")
    return random.Random(seed).sample(list(train), k)


# ------------------------------------------------------------------------------------------ prompts


class QAPromptBuilder:
    def __init__(self, tokenizer, template: QATemplate, chat_template: str | None = None) -> None:
        self.tok, self.t, self.chat = tokenizer, template, chat_template
        bos = tokenizer.special_tokens.get("bos") if hasattr(tokenizer, "special_tokens") else None
        bos_id = tokenizer.convert_tokens_to_ids(bos) if bos else None
        probe = tokenizer.encode("a")
        self.bos = [bos_id] if bos_id is not None and chat_template is None and probe[:1] == [bos_id] else []
        self.answer_prefix = template.answer_prefix.lstrip(" ") if chat_template is not None else template.answer_prefix

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def body(self, demos: Sequence[QAExample], query: str) -> str:
        t = self.t
        parts = ([t.instruction] if t.instruction else []) + [
            t.fill(d) + t.answer_prefix + d.answers[0].strip() for d in demos] + [query]
        body = t.separator.join(parts)
        if self.chat is not None:
            body = render_chat(self.chat, body, getattr(self.tok, "special_tokens", {}))
        return body

    def full(self, demos: Sequence[QAExample], ex: QAExample | None) -> list[int]:
        """Prompt ids (ex None: the content-free query, empty question and context)."""
        return self.bos + self.encode(self.body(demos, self.t.fill(ex) if ex is not None else self.t.fill("", "")))

    def option_ids(self, option: str) -> list[int]:
        return self.encode(self.answer_prefix + option.strip())

    def prefix(self, demos: Sequence[QAExample], fulls: Sequence[Sequence[int]]) -> list[int]:
        """The demonstrations' ids, cut back to where every prompt in ``fulls`` agrees (see icl.PromptBuilder)."""
        from plmkit.prompting.icl import shared_prefix

        return shared_prefix(self.bos + self.encode(self.body(demos, _MARK).split(_MARK)[0]), fulls)


def _fit(builder: QAPromptBuilder, demos: list[QAExample], ex: QAExample, limit: int | None, extra: int):
    """(demonstrations used, prompt ids): earliest demonstrations dropped whole until prompt + extra fits."""
    n = len(demos)
    while True:
        full = builder.full(demos[len(demos) - n:], ex)
        if limit is None or len(full) + extra <= limit:
            return n, full
        if n == 0:
            raise UserError(f"{ex.source}: the prompt is {len(full) + extra} tokens without any demonstration, "
                            f"more than --max-length {limit}")
        n -= 1


def score_choices(model, builder: QAPromptBuilder, demos: list[QAExample], examples: Sequence[QAExample],
                  score: str = "sum", max_length: int | None = None, batch_size: int = 8,
                  share_prefix: bool = True) -> list[dict]:
    """Score every option of every example after ``demos``; one record per example."""
    from plmkit.prompting.scoring import aggregate

    if score not in ("sum", "mean", "pmi"):
        raise UserError(f"--score {score!r}: expected sum, mean or pmi")
    opt_ids = [[builder.option_ids(o) for o in ex.options] for ex in examples]
    groups: dict[int, list[int]] = {}
    fulls = {}
    for i, ex in enumerate(examples):
        n, fulls[i] = _fit(builder, demos, ex, max_length, max(len(o) for o in opt_ids[i]) - 1)
        groups.setdefault(n, []).append(i)
    records: list[dict] = [None] * len(examples)  # type: ignore[list-item]
    for n, idx in sorted(groups.items()):
        d = demos[len(demos) - n:]
        seqs = [fulls[i] for i in idx]
        items = [(opt_ids[i]) for i in idx]
        null = builder.full(d, None) if score == "pmi" else None
        prefix = builder.prefix(d, seqs + ([null] if null else []))
        rows = [(s[len(prefix):], o) for s, o in zip(seqs, items)]
        if null is not None:
            rows += [(null[len(prefix):], o) for o in items]
        enc = encode_prefix(model, prefix) if share_prefix and prefix else None
        lp = continuation_logprobs(model, prefix, rows, batch_size, share_prefix, enc)
        for r, i in enumerate(idx):
            sc = np.array([aggregate(x, "sum" if score == "pmi" else score) for x in lp[r]])
            if null is not None:
                sc = sc - np.array([aggregate(x, "sum") for x in lp[len(idx) + r]])
            pred = int(np.argmax(sc))
            records[i] = {"index": i, "source": examples[i].source, "answer": examples[i].answer, "prediction": pred,
                          "correct": pred == examples[i].answer, "scores": [round(float(v), 6) for v in sc],
                          "demonstrations_used": n, "demonstrations_requested": len(demos),
                          "prompt_tokens": len(fulls[i]), "shared_prefix_tokens": len(prefix)}
    return records


def answer_scores(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """SQuAD-style exact match and token F1 of one prediction, max over the gold answers."""
    from plmkit.tasks.metrics import squad_exact, squad_f1

    return {"exact_match": max(squad_exact(prediction, g) for g in golds),
            "f1": max(squad_f1(prediction, g) for g in golds)}


def cut_answer(text: str) -> str:
    """The generated answer: up to the first newline, stripped."""
    return text.split("\n", 1)[0].strip()


def generate_answers(model, tok, builder: QAPromptBuilder, demos: list[QAExample], examples: Sequence[QAExample],
                     max_new_tokens: int = 16, max_length: int | None = None) -> list[dict]:
    """Greedy answers after ``demos``; one record per example with its EM / F1."""
    import torch

    eos = model.config.eos_token_id if model.config.eos_token_id is not None else getattr(tok, "eos_token_id", None)
    dev = next(model.parameters()).device
    records = []
    for i, ex in enumerate(examples):
        n, full = _fit(builder, demos, ex, max_length, max_new_tokens)
        out = model.generate(torch.tensor([full], device=dev), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos if eos is not None else [])
        new = out[0, len(full):].tolist()
        if eos is not None:
            stops = eos if isinstance(eos, (list, tuple)) else [eos]
            for j, t in enumerate(new):
                if t in stops:
                    new = new[:j]
                    break
        text = tok.decode(new, skip_special_tokens=True)
        answer = cut_answer(text)
        records.append({"index": i, "source": ex.source, "answers": ex.answers, "generated": text,
                        "prediction": answer, **answer_scores(answer, ex.answers),
                        "demonstrations_used": n, "demonstrations_requested": len(demos),
                        "prompt_tokens": len(full)})
    return records


def _summary(values: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in values[0]:
        v = np.array([x[name] for x in values], dtype=float)
        out[name], out[f"{name}_std"], out[f"{name}_min"] = float(v.mean()), float(v.std()), float(v.min())
    out["runs"] = len(values)
    return out


def evaluate_qa(model, tok, task: str, templates: Sequence[QATemplate], train: Sequence[QAExample],
                examples: Sequence[QAExample], shots: Sequence[int], seeds: int, chat_template: str | None = None,
                score: str = "sum", max_length: int | None = None, batch_size: int = 8, share_prefix: bool = True,
                max_new_tokens: int = 16, predictions_path: Path | None = None, log=print) -> dict:
    """Every (template, shots, seed) of a multiple-choice or generation task; the metrics.json dict."""
    plans = [(k, seed, sample_qa_demonstrations(train, k, seed)) for k in shots
             for seed in (range(seeds) if k > 0 else [0])]
    runs, truncated = [], 0
    fh = open(predictions_path, "w", encoding="utf-8") if predictions_path else None
    t0 = time.perf_counter()
    try:
        for t in templates:
            b = QAPromptBuilder(tok, t, chat_template)
            for k, seed, demos in plans:
                t1 = time.perf_counter()
                if task == "multiple-choice":
                    recs = score_choices(model, b, demos, examples, score, max_length, batch_size, share_prefix)
                    metrics = {"accuracy": float(np.mean([r["correct"] for r in recs]))}
                else:
                    recs = generate_answers(model, tok, b, demos, examples, max_new_tokens, max_length)
                    metrics = {m: float(np.mean([r[m] for r in recs])) for m in ("exact_match", "f1")}
                cut = sum(r["demonstrations_used"] < k for r in recs)
                truncated += cut
                runs.append({"template": t.name, "shots": k, "seed": seed if k > 0 else None, "metrics": metrics,
                             "examples_truncated": cut, "seconds": round(time.perf_counter() - t1, 2)})
                log(f"template {t.name} shots {k} seed {seed if k > 0 else '-'}: "
                    + ", ".join(f"{m} {v:.4f}" for m, v in metrics.items())
                    + (f" | {cut} examples truncated" if cut else "") + f" ({time.perf_counter() - t1:.1f}s)")
                if fh:
                    for r in recs:
                        fh.write(json.dumps({"template": t.name, "shots": k, "seed": seed if k > 0 else None, **r})
                                 + "\n")
    finally:
        if fh:
            fh.close()

    def by(runs_):
        return {str(k): _summary([r["metrics"] for r in runs_ if r["shots"] == k]) for k in shots
                if any(r["shots"] == k for r in runs_)}

    scoring = ({"score": score, "description": {
        "sum": "sum of the option tokens' log-probabilities after the prompt",
        "mean": "mean per-token log-probability of the option tokens after the prompt",
        "pmi": "sum log p(option | prompt) - sum log p(option | demonstrations + template with empty question "
               "and context)"}[score]} if task == "multiple-choice" else
               {"decoding": f"greedy, at most {max_new_tokens} new tokens, cut at the first newline / EOS",
                "metrics": "SQuAD exact match and token F1 (official normalisation), max over gold answers"})
    return {"by_shots": by(runs), "by_template": {t.name: {"raw": by([r for r in runs if r["template"] == t.name])}
                                                  for t in templates},
            "scoring": {**scoring, "chat": chat_template is not None,
                        "demonstrations": "drawn from the training split only, seeded with random.Random(seed)",
                        "aggregate": "mean, std (population) and min over demonstration seeds and templates"},
            "templates": {t.name: {"source": t.source, "answer_prefix": t.answer_prefix} for t in templates},
            "shots": list(shots), "seeds": seeds, "n_eval": len(examples), "n_train": len(train),
            "max_length": max_length, "examples_truncated": truncated, "runs": runs,
            "seconds": round(time.perf_counter() - t0, 1)}
