"""Task specifications: what each ``--task`` name reads, which head it needs and how it is scored.

Named GLUE / CoNLL / SQuAD tasks pin the file layout of the standard releases (as in
``../shared/data``); the generic kinds (``classification``, ``pair``, ``regression``,
``multilabel``, ``ner``, ``qa``, ``multiple-choice``) read ``train.*`` / ``dev.*`` from
``--data`` with named columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from plmkit.errors import UserError, suggest
import plmkit.tasks.readers as readers
from plmkit.tasks.readers import BadRows

KINDS = ("classification", "regression", "multilabel", "token", "qa", "multiple_choice", "text2text")


@dataclass
class TaskSpec:
    """How to read and score one task.

    Attributes:
        name: the ``--task`` name.
        kind: one of :data:`KINDS`.
        train_file / dev_file: file names inside ``--data`` (first existing of a tuple).
        text_column / text_pair_column / label_column / header: table layout (classification kinds).
        metrics: metric names written to eval.json; ``main_metric`` selects the best checkpoint.
    """

    name: str
    kind: str
    train_file: str | tuple[str, ...] = ("train.tsv", "train.csv", "train.jsonl")
    dev_file: str | tuple[str, ...] = ("dev.tsv", "dev.csv", "dev.jsonl")
    text_column: str | int | tuple = ("sentence", "text", "text_a", "sentence1")
    text_pair_column: str | int | None = None
    label_column: str | int | None = "label"
    header: bool = True
    metrics: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    # token tasks
    strip_digit_suffix: bool = False
    # qa: which SQuAD articles form train / dev when both come from one file
    train_articles: slice | None = None
    dev_articles: slice | None = None
    labels: tuple[str, ...] | None = None
    """The fixed label set of a named task (classes, or token tags); a row with another label is a bad row
    (:func:`check_known_labels`). None: the labels are whatever the training data holds."""
    extra: dict = field(default_factory=dict)


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("sst2", "classification", labels=("0", "1")),
    "cola": TaskSpec("cola", "classification", "in_domain_train.tsv", "dev.tsv", text_column=3, label_column=1,
                     header=False, metrics=("mcc", "accuracy"), main_metric="mcc", labels=("0", "1")),
    "mrpc": TaskSpec("mrpc", "classification", "msr_paraphrase_train.txt", "dev.tsv", "#1 String", "#2 String",
                     "Quality", metrics=("accuracy", "f1"), main_metric="f1", labels=("0", "1")),
    "rte": TaskSpec("rte", "classification", text_column="sentence1", text_pair_column="sentence2",
                    labels=("entailment", "not_entailment")),
    "stsb": TaskSpec("stsb", "regression", text_column="sentence1", text_pair_column="sentence2",
                     label_column="score", metrics=("pearson", "spearman"), main_metric="pearson"),
    "conll2003": TaskSpec("conll2003", "token", "train.txt", ("valid.txt", "dev.txt"),
                          metrics=("f1", "precision", "recall"), main_metric="f1",
                          labels=("O",) + tuple(f"{p}-{t}" for t in ("PER", "ORG", "LOC", "MISC") for p in "BI")),
    "squad": TaskSpec("squad", "qa", ("train-v1.1.json", "dev-v1.1.json"), "dev-v1.1.json",
                      metrics=("exact_match", "f1"), main_metric="f1"),
    # generic kinds
    "classification": TaskSpec("classification", "classification", metrics=("accuracy", "f1_macro"), main_metric="accuracy"),
    "pair": TaskSpec("pair", "classification", text_column=("sentence1", "text_a", "text"),
                     text_pair_column="sentence2", metrics=("accuracy", "f1_macro")),
    "regression": TaskSpec("regression", "regression", metrics=("pearson", "spearman"), main_metric="pearson"),
    "multilabel": TaskSpec("multilabel", "multilabel", metrics=("f1_micro", "f1_macro"), main_metric="f1_micro"),
    "ner": TaskSpec("ner", "token", ("train.txt", "train.conll", "train.bio"), ("dev.txt", "dev.conll", "dev.bio", "valid.txt"),
                    metrics=("f1", "precision", "recall"), main_metric="f1"),
    "qa": TaskSpec("qa", "qa", ("train.json",), ("dev.json",), metrics=("exact_match", "f1"), main_metric="f1"),
    "multiple-choice": TaskSpec("multiple-choice", "multiple_choice", ("train.jsonl",), ("dev.jsonl",)),
    "text2text": TaskSpec("text2text", "text2text", metrics=("accuracy", "exact_match")),
}


def get_task(name: str, **overrides) -> TaskSpec:
    """Look up a task by name and apply overrides (None values are ignored)."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}{suggest(name, TASKS)}; choose from {', '.join(TASKS)}")
    return replace(TASKS[name], **{k: v for k, v in overrides.items() if v is not None})


def resolve_file(data: Path, names: str | tuple[str, ...], what: str) -> Path:
    """The first of ``names`` that exists in ``data`` (or ``data`` itself when it is a file)."""
    if data.is_file():
        return data
    cands = (names,) if isinstance(names, str) else names
    for n in cands:
        p = Path(n) if Path(n).is_absolute() else data / n
        if p.exists():
            return p
    raise UserError(f"{data}: no {what} file (looked for {', '.join(cands)})")


def read_split(spec: TaskSpec, path: Path, split: str, bad: BadRows | None = None, labelled: bool = True) -> list:
    """Read the examples of one split with the spec's layout."""
    if spec.kind in ("classification", "regression", "multilabel", "text2text"):
        if spec.name == "mrpc" and split == "train" and path.name == "msr_paraphrase_train.txt":
            return readers.read_mrpc_train(path.parent, bad=bad)
        label_type = {"classification": "class", "regression": "float", "multilabel": "multi", "text2text": "class"}[spec.kind]
        return readers.read_table(path, spec.text_column, spec.text_pair_column,
                                  spec.label_column if labelled else None, header=spec.header,
                                  label_type=label_type, bad=bad)
    if spec.kind == "token":
        return readers.read_conll(path, strip_digit_suffix=spec.strip_digit_suffix, labelled=labelled, bad=bad)
    if spec.kind == "qa":
        arts = spec.train_articles if split == "train" else spec.dev_articles
        return readers.read_squad(path, articles=arts, bad=bad)
    if spec.kind == "multiple_choice":
        return readers.read_choices(path, labelled=labelled, bad=bad)
    raise UserError(f"task kind {spec.kind!r} has no reader")


def check_known_labels(spec: TaskSpec, examples: list, bad: BadRows) -> list:
    """The examples whose labels (token tags) all belong to the named task's fixed set ``spec.labels``; each
    other one is a bad row (an error naming file:line, or counted and skipped under ``--skip-bad``)."""
    if not spec.labels or spec.kind not in ("classification", "multilabel", "token"):
        return examples
    known, out = set(spec.labels), []
    for e in examples:
        labs = e.tags if spec.kind == "token" else (e.label if isinstance(e.label, list) else [e.label])
        unknown = [lab for lab in (labs or []) if lab is not None and lab not in known]
        if unknown:
            what = "tag" if spec.kind == "token" else "label"
            bad.bad(f"{e.source}: {what} {unknown[0]!r} is not one of the {spec.name} {what}s "
                    f"({', '.join(spec.labels)})")
            continue
        out.append(e)
    return out


def parse_slice(text: str | None) -> slice | None:
    """``"0:36"`` -> slice(0, 36); ``"36:"`` -> slice(36, None)."""
    if text is None:
        return None
    try:
        a, _, b = text.partition(":")
        return slice(int(a) if a else None, int(b) if b else None)
    except ValueError:
        raise UserError(f"expected an article range like 0:36 or 36:, got {text!r}") from None
