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

KINDS = ("classification", "regression", "multilabel", "token", "qa", "multiple_choice", "text2text", "open_qa")


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
    # REALM-style open-domain QA (plmkit.tasks.open_qa): SQuAD questions, every paragraph of the file is the
    # retrieval corpus; questions split by article (36 of SQuAD dev's 48 train, the other 12 test)
    "open-qa": TaskSpec("open-qa", "open_qa", ("dev-v1.1.json", "train-v1.1.json"), "dev-v1.1.json",
                        metrics=("exact_match", "f1", "recall_at_k"), main_metric="exact_match",
                        train_articles=slice(0, 36), dev_articles=slice(36, None)),
}

# Chinese sets as shipped in ../shared/data/chinese (see its README for the releases and their gaps).
NER_METRICS = dict(metrics=("f1", "precision", "recall"), main_metric="f1")
TASKS.update({
    # ChnSentiCorp (LUGE release): label<TAB>text_a (dev adds a qid column); test has no labels.
    "chnsenticorp": TaskSpec("chnsenticorp", "classification", "train.tsv", "dev.tsv", text_column="text_a",
                             metrics=("accuracy", "f1_macro")),
    # Weibo NER (He & Sun's revised BIO, 17 tags over PER/ORG/LOC/GPE x .NAM/.NOM): char+segment digit<TAB>tag;
    # the digit is dropped by default (--no-strip-digit-suffix keeps it). 8 training sentences (and 4 of test)
    # have an I- tag that does not continue its entity; it starts one, as conlleval reads it (repair_bio).
    "weibo-ner": TaskSpec("weibo-ner", "token", "weiboNER_2nd_conll.train", "weiboNER_2nd_conll.dev",
                          strip_digit_suffix=True, extra={"repair_bio": True}, **NER_METRICS),
    # MSRA NER (SIGHAN 2006): only the test file ships; the first 80% of its sentences train, the rest evaluate.
    "msra-ner": TaskSpec("msra-ner", "token", "msra_test_bio.txt", "msra_test_bio.txt",
                         extra={"train_part": (0.0, 0.8), "dev_part": (0.8, 1.0)}, **NER_METRICS),
    # People's Daily 1998 NER: the train split does not ship; its dev split trains, its test split evaluates.
    "peoples-daily-ner": TaskSpec("peoples-daily-ner", "token", "example.dev", "example.test", **NER_METRICS),
})


# Aspect-based sentiment analysis via auxiliary sentences (Sun et al. 2019; plmkit.tasks.absa): each
# (target, aspect) is a sentence-pair row (--absa-format); the files are the authors' copies in ../shared/data/absa.
ABSA_METRICS = ("aspect_accuracy", "aspect_f1", "aspect_auc", "sentiment_accuracy", "sentiment_auc")
TASKS.update({
    "absa-sentihood": TaskSpec("absa-sentihood", "classification", "sentihood-train.json", "sentihood-dev.json",
                               metrics=ABSA_METRICS, main_metric="aspect_f1", extra={"absa": "sentihood"}),
    "absa-semeval": TaskSpec("absa-semeval", "classification", "Restaurants_Train.xml", "Restaurants_Test_Gold.xml",
                             metrics=ABSA_METRICS, main_metric="aspect_f1", extra={"absa": "semeval"}),
    # SemEval-2014 restaurant sentences with exactly one aspect category: 5-way sentence classification
    "absa-semeval-category": TaskSpec("absa-semeval-category", "classification", "Restaurants_Train.xml",
                                      "Restaurants_Test_Gold.xml", metrics=("accuracy", "f1_macro"),
                                      labels=("ambience", "anecdotes/miscellaneous", "food", "price", "service"),
                                      extra={"absa_category": True}),
})


def repair_bio(tags: list[str]) -> list[str]:
    """BIO2 tags with every ``I-X`` that does not continue an ``X`` entity turned into ``B-X`` (conlleval's reading)."""
    out: list[str] = []
    for t in tags:
        if t.startswith("I-") and not (out and out[-1][2:] == t[2:] and out[-1][:2] in ("B-", "I-")):
            t = "B-" + t[2:]
        out.append(t)
    return out


def _part(examples: list, part: tuple[float, float] | None) -> list:
    """The sentences between two fractions of a file (a fixed, documented split of a one-file release)."""
    if part is None:
        return examples
    n = len(examples)
    return examples[round(part[0] * n): round(part[1] * n)]


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
    if spec.extra.get("absa_category"):
        from plmkit.tasks.absa import read_semeval_categories

        return read_semeval_categories(path, bad, labelled)
    if spec.extra.get("absa"):
        raise UserError(f"{spec.name}: ABSA data is read by plm finetune --task {spec.name} (plmkit.tasks.absa), "
                        "not as a table")
    if spec.kind in ("classification", "regression", "multilabel", "text2text"):
        if spec.name == "mrpc" and split == "train" and path.name == "msr_paraphrase_train.txt":
            return readers.read_mrpc_train(path.parent, bad=bad)
        label_type = {"classification": "class", "regression": "float", "multilabel": "multi", "text2text": "class"}[spec.kind]
        return readers.read_table(path, spec.text_column, spec.text_pair_column,
                                  spec.label_column if labelled else None, header=spec.header,
                                  label_type=label_type, bad=bad)
    if spec.kind == "token":
        repair = bool(spec.extra.get("repair_bio"))
        rows = readers.read_conll(path, strip_digit_suffix=spec.strip_digit_suffix, labelled=labelled,
                                  validate_bio=not repair, bad=bad)
        if repair and labelled:
            for r in rows:
                r.tags = repair_bio(r.tags)
        own = spec.train_file if split == "train" else spec.dev_file
        if labelled and isinstance(own, str) and path.name == own:  # the task's own one-file split
            rows = _part(rows, spec.extra.get(f"{split}_part"))
        return rows
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
