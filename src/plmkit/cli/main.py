"""``plm``: the command-line entry point.

Each command lives in ``plmkit/cli/<module>.py`` and exposes::

    HELP = "one-line purpose shown by plm --help"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int | None: ...

``COMMANDS`` below is the single table of commands; ``tests/cli/test_main.py``
keeps it in sync with the modules. Command modules are imported only when their
command runs (``plm --help`` imports none of torch), except that help text is
read from each module's ``HELP`` by a cheap import.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# command name -> (module under plmkit.cli, one-line purpose)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("quickstart", "Train a tokenizer, pretrain tiny BERT (MLM) and GPT (CLM) models, show perplexity before/after."),
    "tokenizer": ("tokenizer", "Train a WordPiece / byte-level BPE / Unigram / char tokenizer (tokenizer train)."),
    "prepare": ("prepare", "Tokenize a corpus once into a sharded memory-mapped token store."),
    "pretrain": ("pretrain", "Pretrain any backbone with any objective from a YAML recipe (resumable, torchrun-ready)."),
    "finetune": ("finetune", "Fine-tune a checkpoint on a task (GLUE, NER, QA, open-domain QA, ABSA, multiple choice, "
                             "text-to-text; multi-task, active learning)."),
    "evaluate": ("evaluate", "Evaluate a fine-tuned checkpoint on a data split."),
    "predict": ("predict", "Run a fine-tuned checkpoint over inputs and write JSONL predictions."),
    "generate": ("generate", "Generate text from a causal LM or an encoder-decoder (greedy, sampling, beam search), streaming."),
    "fill-mask": ("fill_mask", "Predict the [MASK] tokens of a masked language model."),
    "convert": ("convert", "Convert GGUF or HF-format checkpoints into an HF-format directory or (--to gguf) a GGUF file."),
    "ngram": ("ngram", "Train and evaluate n-gram language models (add-k, Katz, Kneser-Ney); ARPA export."),
    "word2vec": ("word2vec", "Train word2vec (CBOW / skip-gram) and query similar words and analogies."),
    "probe": ("probe", "Probe what a model knows: LAMA cloze probing (per layer, LAMA-UHN); FFN key-value memories."),
    "trace": ("trace", "Causal tracing: where a causal LM recalls a fact (restore hidden / MLP / attention states)."),
    "icl": ("icl", "Zero/few-shot in-context evaluation with prompt templates, verbalizers and contextual calibration."),
    "neurons": ("neurons", "Knowledge neurons: find them by integrated gradients, then suppress / amplify / erase / update."),
    "edit": ("edit", "Edit facts in a causal LM (ROME, MEMIT, FT, FT+L, knowledge neurons); CounterFact / zsRE evaluation."),
    "attribute": ("attribute", "Trace facts to training examples: BM25, embedding similarity, TracIn over a run's checkpoints."),
    "analyze": ("analyze", "Look inside a model per layer: contextuality (Ethayarajh 2019); POS/chunk/NER probes with control "
                           "tasks; attention maps and per-head statistics (Clark et al. 2019)."),
    "attack": ("attack", "BERT-Attack a fine-tuned classifier with MLM or word-embedding substitutes; write every adversarial "
                         "example; --defend: adversarial training, then attack again."),
    "distill": ("distill", "Distil a fine-tuned teacher into a smaller student (DistilBERT, TinyBERT, PKD, MiniLM losses)."),
    "quantize": ("quantize", "Quantize a fine-tuned checkpoint's linear layers (dynamic int8, weight-only int8 / int4)."),
    "prune": ("prune", "Prune a fine-tuned checkpoint: attention heads / FFN neurons by importance, or weights by magnitude."),
    "reproduce": ("reproduce", "Reproduce a claim of the literature in miniature (recipes/claims): run it, write claim.json "
                               "with a verdict."),
    "report": ("report", "Write one self-contained HTML report (claims vs papers, loss curves, evaluations, configs, "
                         "environment) from claim and run directories."),
}


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``plm evaluate: error: argument --batch-size: expected a
    positive integer, got -1``) and exit 2, like a ``UserError``; ``--help`` still shows the usage. Sub-command
    parsers are of the same class (argparse creates them with the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _formatter(prog):
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=32, width=100)


def build_parser(load_modules: str | None = "all") -> argparse.ArgumentParser:
    """Build the parser. ``load_modules`` is a command name to load only that one ("all" loads all)."""
    from plmkit import __version__

    parser = Parser(
        prog="plm",
        description="plmkit: pretrain, adapt, evaluate and generate with pretrained language models.",
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"plmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (module, purpose) in COMMANDS.items():
        p = sub.add_parser(name, help=purpose, description=purpose, formatter_class=_formatter)
        if load_modules == "all" or load_modules == name:
            mod = importlib.import_module(f"plmkit.cli.{module}")
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from plmkit.errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Only load the module of the command being run (fast startup, no torch import for --help).
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(load_modules=command if command in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or a one-line usage error (2)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from plmkit import progress
    from plmkit.errors import Interrupted

    progress.reset()
    progress.set_program(f"plm {args.command}")
    signame = ["SIGINT"]
    old_handlers = _install_signals(signame)
    try:
        progress.interval()  # a malformed PLMKIT_PROGRESS_EVERY fails here, before any work
        rc = args._run(args)
    except UserError as e:
        print(f"plm {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"plm {args.command}: stopped: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        # A stop by signal outside a loop that stops gracefully: say where the work stood and what to do.
        where = progress.where()
        hint = progress.hint() or "nothing was finished; run the command again"
        print(f"plm {args.command}: stopped by {signame[0]}{' ' + where if where else ''}; {hint}",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    return int(rc or 0)


def _install_signals(signame: list[str]) -> dict:
    """SIGTERM raises KeyboardInterrupt like Ctrl-C does (the trainer catches both and stops after a step;
    elsewhere the CLI prints one line); ``signame[0]`` records which signal it was. Returns the old handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        signame[0] = signal.Signals(signum).name
        raise KeyboardInterrupt

    old = {signal.SIGTERM: signal.signal(signal.SIGTERM, handler)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        old[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    return old
