"""``FinetuneConfig``: the options of one fine-tuning run.

``plm finetune``'s flags are generated from these fields (``plmkit.cli.fields``): the flag is the field
name with dashes, the type comes from the annotation, the help text from the docstring under the field,
and a few CLI details from the field's metadata:

- ``flag``: a different option string (``eval_each_epoch`` is switched off with ``--no-epoch-eval``), and
  ``flag_help`` its help when it does not read as the field's docstring
- ``choices``: a function returning the allowed values (imported lazily)
- ``parse``: how a command-line string becomes the value (column names: digits mean an index)
- ``path``: a path; in a ``--recipe`` it is taken relative to the recipe's folder when it exists there,
  and ``pkg:NAME`` names a checkpoint shipped in an installed package
- ``cli: False``: not a command-line option
- ``required``: must be given, as a flag or in the recipe
- ``bound``: the numbers accepted (``plmkit.checks``): checked on the flag, in the recipe (file:line) and
  in ``__post_init__``; floats must be finite everywhere

A ``--recipe`` YAML file holds the same keys (snake_case); defaults < recipe < flags given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.checks import FRACTION, NON_NEGATIVE, POSITIVE, at_least, bound, check_fields


def _task_names() -> list[str]:
    from plmkit.tasks.specs import TASKS

    return list(TASKS)


def _mode_names() -> list[str]:
    from plmkit.tasks.modes import MODES

    return list(MODES)


def _pooling_names() -> list[str]:
    from plmkit.tasks.pooling import POOLINGS

    return list(POOLINGS)


def column(value: str):
    """A column name from the command line; pure digits mean a column index (files without header)."""
    return int(value) if value.isdigit() else value


@dataclass
class FinetuneConfig:
    """Options of one fine-tuning run (``plm finetune`` flags are generated from these fields)."""

    task: str = field(metadata={"choices": _task_names, "required": True})
    """task name or generic task kind"""
    model: str = field(metadata={"path": True, "required": True})
    """HF-format checkpoint directory, .gguf file or preset name"""
    data: str = field(metadata={"path": True, "required": True})
    """data directory (train/dev files) or a single file"""
    out: str = field(metadata={"path": True, "required": True})
    """output directory (checkpoint + eval.json)"""
    mode: str = field(default="full", metadata={"choices": _mode_names})
    """adaptation mode"""
    epochs: float = field(default=2.0, metadata=bound(POSITIVE))
    """training epochs (fractions allowed)"""
    lr: float = field(default=5e-5, metadata=bound(POSITIVE))
    """peak learning rate; 5e-5 (HF run_glue's default) is for pretrained checkpoints, small ones included
    (MiniLM: see README's table); a randomly initialised model (a preset name) learns little at a fine-tuning
    rate: give it a from-scratch rate, 1e-4 to 1e-3 (the tests' tiny random BERT uses 2e-3)"""
    batch_size: int = field(default=8, metadata=bound(POSITIVE))
    """examples per batch; 8 as HF run_glue: one epoch of 8,000 SST-2 examples from MiniLM gives 0.852 at
    batch 8, 0.846 at 16 and 0.831 at 32 (README's table): small data wants more updates"""
    max_seq_len: int = field(default=128, metadata=bound(at_least(4)))
    """max tokens per input (truncation is counted)"""
    max_train_examples: int | None = field(default=None, metadata=bound(POSITIVE))
    """random subset of N training examples"""
    max_eval_examples: int | None = field(default=None, metadata=bound(POSITIVE))
    """random subset of N dev examples"""
    seed: int = 1
    """random seed"""
    tokenizer: str | None = field(default=None, metadata={"path": True})
    """tokenizer path (default: the model directory)"""
    train_file: str | None = None
    """training file name inside --data (overrides the task's)"""
    dev_file: str | None = None
    """dev file name inside --data (overrides the task's)"""
    text_column: str | None = field(default=None, metadata={"parse": column})
    """text column name (or index without header)"""
    text_pair_column: str | None = field(default=None, metadata={"parse": column})
    """second text column for pair tasks"""
    label_column: str | None = field(default=None, metadata={"parse": column})
    """label column name (or index without header)"""
    no_header: bool = False
    """TSV/CSV files have no header row (columns by index)"""
    train_articles: str | None = None
    """QA: slice of SQuAD articles for training, e.g. 0:36"""
    dev_articles: str | None = None
    """QA: slice of SQuAD articles for evaluation, e.g. 36:"""
    doc_stride: int = field(default=128, metadata=bound(POSITIVE))
    """QA: overlap stride between context windows"""
    pooling: str = field(default="auto", metadata={"choices": _pooling_names})
    """sequence pooling for the head; auto: what a sentence-transformers checkpoint declares
    (1_Pooling/config.json), else the family's usual one (BERT/ALBERT pooler, RoBERTa/ELECTRA first token,
    GPT/Llama/XLNet last token, ELMo mean); eval.json records the choice"""
    warmup: float = field(default=0.1, metadata=bound(FRACTION))
    """fraction of steps of linear warm-up"""
    weight_decay: float = field(default=0.01, metadata=bound(NON_NEGATIVE))
    """AdamW weight decay"""
    skip_bad: bool = False
    """skip (and count) bad rows instead of stopping"""
    adapter_size: int = field(default=64, metadata=bound(POSITIVE))
    """adapter bottleneck size"""
    pal_size: int = field(default=204, metadata=bound(POSITIVE))
    """PAL projected size"""
    lora_rank: int = field(default=8, metadata=bound(POSITIVE))
    """LoRA rank r"""
    lora_alpha: float = field(default=16.0, metadata=bound(POSITIVE))
    """LoRA scale alpha"""
    prompt_tokens: int = field(default=20, metadata=bound(POSITIVE))
    """soft prompts: number of virtual tokens (prompt / p-tuning) or prefix length (prefix-tuning)"""
    prompt_encoder: str = field(default="lstm", metadata={"choices": lambda: ["lstm", "mlp"]})
    """p-tuning: the prompt encoder"""
    prompt_hidden: int = field(default=512, metadata=bound(POSITIVE))
    """prefix-tuning: width of the reparametrising MLP (p-tuning: of the prompt encoder)"""
    prompt_init: str = field(default="vocab", metadata={"choices": lambda: ["vocab", "labels", "random"]})
    """prompt-tuning: initialise the virtual tokens from random vocabulary rows, the label words' embeddings
    (then vocabulary rows; needs --verbalizer) or uniform(-0.5, 0.5) (Lester et al. 2021)"""
    verbalizer: str | None = None
    """pattern + verbalizer YAML (recipes/prompts/<task>/): classify with the model's LM / MLM head, the
    log-probability of each label word at the answer position, instead of a classification head (--mode pet:
    a file or a directory of pattern-verbalizer pairs)"""
    unlabelled: str | None = None
    """--mode pet: unlabelled examples in the task's format (labels ignored) for the auxiliary MLM loss, the
    ensemble's soft labels and the distilled model"""
    max_unlabelled: int = field(default=10000, metadata=bound(POSITIVE))
    """--mode pet: at most this many unlabelled examples (seeded subset)"""
    pet_alpha: float = field(default=1e-4, metadata=bound(FRACTION))
    """--mode pet: loss = (1 - alpha) CE + alpha MLM (1e-4: Schick & Schuetze 2021)"""
    pet_temperature: float = field(default=2.0, metadata=bound(POSITIVE))
    """--mode pet: temperature of the ensemble's soft labels (2 in the paper)"""
    regularizer: str | None = field(default=None, metadata={"choices": lambda: ["l2sp", "ewc"]})
    """pull weights towards the start (L2-SP) or a previous task (EWC)"""
    reg_weight: float = field(default=0.01, metadata=bound(NON_NEGATIVE))
    """regularizer strength (alpha / lambda)"""
    ewc_from: str | None = None
    """EWC: previous fine-tuned checkpoint whose task gives the Fisher"""
    self_distill: float = field(default=0.0, metadata=bound(NON_NEGATIVE))
    """weight of self-distillation from the running weight average (0 = off)"""
    distill_every: int = field(default=50, metadata=bound(POSITIVE))
    """self-distillation: steps between teacher snapshots"""
    early_exit: bool = False
    """DeeBERT: train per-layer off-ramps and report the entropy/speed curve"""
    head_lr: float | None = field(default=None, metadata=bound(POSITIVE))
    """peak LR of the task head / pooler group (default: --lr; early-exit off-ramps: 1e-3)"""
    prefix: str | None = None
    """text2text: task prefix of the source text (default: the task name)"""
    max_target_len: int = field(default=8, metadata=bound(POSITIVE))
    """text2text: max tokens of a generated target"""
    exit_thresholds: tuple[float, ...] = field(default=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
                                               metadata=bound(NON_NEGATIVE))
    """early exit: comma-separated entropy thresholds to report"""
    eval_each_epoch: bool = field(default=True, metadata={"flag": "--no-epoch-eval",
                                                          "flag_help": "evaluate on dev only at the end"})
    """evaluate on dev after every epoch"""
    eval_batch_size: int = field(default=64, metadata=bound(POSITIVE))
    """batch size of dev evaluation"""
    precision: str = field(default="fp32", metadata={"choices": lambda: ["fp32", "bf16", "auto"]})
    """training arithmetic: fp32, or bf16 autocast (float32 weights and optimiser state; on a CPU that
    multiplies bf16 natively ~1.5x faster); auto = bf16 where the device multiplies it natively. Dev
    evaluation runs in fp32"""
    progress: bool | None = None
    """show a progress bar (default: only when stderr is a terminal)"""
    strip_digit_suffix: bool | None = None
    """NER: drop the word-segment digit after each character (Weibo NER's '我0'; default: on for weibo-ner)"""
    tasks: tuple[str, ...] | None = None
    """multi-task fine-tuning (MT-DNN, needs --multi-task): comma-separated task names, e.g.
    sst2,cola,mrpc,rte,stsb; --data is then a folder holding one sub-folder per task (GLUE's names SST-2,
    CoLA, MRPC, RTE, STS-B, or the task name); --task may be left out"""
    multi_task: bool = False
    """MT-DNN (Liu et al. 2019): one shared encoder, one head per task of --tasks, each batch from one
    task, tasks mixed in proportion to their sizes; --epochs passes over all tasks' data"""
    task_epochs: float = field(default=0.0, metadata=bound(NON_NEGATIVE))
    """--multi-task: then fine-tune a copy of the shared model on each task alone for this many epochs
    (MT-DNN's second stage; 0 = off)"""
    teachers: tuple[str, ...] | None = None
    """--multi-task: comma-separated plm finetune checkpoints (single-task teachers, e.g. several seeds per
    task); each task's teachers are averaged into soft targets for the student (MT-DNN-KD, Liu et al. 2019b)"""
    distill_alpha: float = field(default=0.5, metadata=bound(FRACTION))
    """--teachers: loss = (1 - alpha) * loss on the gold labels + alpha * loss on the teachers' soft targets"""
    active_learning: bool = False
    """active learning (plmkit.tasks.active): the training file is the unlabelled pool; label --al-init random
    examples, then --al-rounds times fine-tune a fresh model on the labelled ones and label --al-batch more
    chosen by --al-strategy; eval.json holds the learning curve (dev metric vs labelled count)"""
    al_strategy: str = field(default="entropy", metadata={"choices": lambda: ["entropy", "kmeans", "random",
                                                                               "coverage", "noise"]})
    """--active-learning: entropy (most uncertain), kmeans (one per k-means cluster of the pooled
    representations, nearest its centre), random, or the reconstruction-loss criteria of --al-lm: coverage
    (greedy: most surprisal mass in LM token types the labelled set lacks) or noise (entropy down-weighted
    where the LM's loss is extreme)"""
    al_lm: str | None = None
    """--al-strategy coverage|noise: the causal LM whose per-token loss is the reconstruction loss (a model
    directory or .gguf file with its tokenizer, e.g. SmolLM2-135M)"""
    al_init: int | None = field(default=None, metadata=bound(POSITIVE))
    """--active-learning: examples labelled at random before the first round (default: --al-batch)"""
    al_batch: int = field(default=32, metadata=bound(POSITIVE))
    """--active-learning: examples labelled per round"""
    al_rounds: int = field(default=4, metadata=bound(POSITIVE))
    """--active-learning: selection rounds (the budget is --al-init + rounds x --al-batch labels)"""
    plausibility: bool = False
    """multiple choice by plausibility (Tamborrino et al. 2020, plmkit.tasks.plausibility): no task head; each
    choice scores the masked LM's log-probability of the context given the choice, the context's tokens masked
    one at a time; trained with a margin loss; needs a model with its MLM head"""
    plausibility_margin: float = field(default=0.5, metadata=bound(NON_NEGATIVE))
    """--plausibility: margin of the loss max(0, margin - S(gold) + S(wrong))"""
    extra: dict = field(default_factory=dict, metadata={"cli": False})
    """free-form options kept in task.json"""
    encoding_errors: str = field(default="strict", metadata={"choices": lambda: ["strict", "replace"]})
    """non-UTF-8 bytes in the data files: stop at the first (file:line, byte offset) or read them as U+FFFD"""
    language_id: int | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """XLM language id: the token type (language embedding) of every input token, train and dev (default: the
    tokenizer's segment ids); `plm evaluate --language-id` gives another language's test data its own"""
    absa_format: str = field(default="nli-m", metadata={"choices": lambda: ["single", "qa-m", "nli-m", "qa-b", "nli-b"]})
    """absa-sentihood / absa-semeval: the auxiliary sentence (Sun et al. 2019): single (sentence alone, one
    model per target-aspect), qa-m / nli-m (question / pseudo-sentence, one 3- or 5-way classifier), qa-b /
    nli-b (one yes/no pair per sentiment label; the label with the highest yes probability wins)"""
    label_as_text: str | None = field(default=None, metadata={"path": True})
    """classification as text matching: each label's text is the second segment of a (text, label) pair scored
    yes / no, the label with the highest yes probability wins; 'names' (the label strings) or a YAML file
    label: text (recipes/label-text/)"""
    retrieval: str = field(default="learned", metadata={"choices": lambda: ["learned", "frozen", "gold", "none"]})
    """open-qa: learned (REALM: the query encoder is trained), frozen (initial retriever), gold (own paragraph), none"""
    retrieve_k: int = field(default=4, metadata=bound(POSITIVE))
    """open-qa: documents retrieved per question"""

    def __post_init__(self) -> None:
        check_fields(self)
