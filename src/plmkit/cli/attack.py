"""``plm attack``: BERT-Attack (Li et al. 2020) on a fine-tuned classifier.

    plm attack --victim CKPT --data DIR|FILE --attacker MLM_DIR|embeddings:FILE [--max-examples N] --out DIR
    plm attack ... --defend [--train-examples N]      (adversarial training, then attack again)

Writes ``DIR/attack.json`` (``original_accuracy``, ``after_attack_accuracy``, ``success_rate``,
``perturbed_fraction``, ``queries_per_example`` and the settings) and ``DIR/adversarial.jsonl`` (one
line per example: original, adversarial text, changed word positions, status, queries). The method and
its conventions: ``plmkit.analysis.attack``. ``--defend`` also writes ``DIR/defend.json`` (before / after
attack summaries, clean dev score before / after, their differences), the defended checkpoint
``DIR/defended/`` and its attack (``attack_defended.json``, ``adversarial_defended.jsonl``)
(``plmkit.analysis.attack.adversarial_training``).
"""

from __future__ import annotations

import argparse
import sys

from plmkit.checks import POSITIVE, PROBABILITY_MASS, arg

HELP = ("BERT-Attack a fine-tuned classifier with MLM or word-embedding substitutes; write every adversarial example; "
        "--defend: adversarial training, then attack again.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--victim", required=True, help="plm finetune output directory of a sequence classifier")
    p.add_argument("--data", required=True, help="TSV with 'sentence' and 'label' columns, or a folder with dev.tsv")
    p.add_argument("--attacker", required=True,
                   help="MLM model directory (BERT-Attack) or embeddings:FILE (word2vec-format vectors)")
    p.add_argument("--attacker-tokenizer", default=None, help="tokenizer of an MLM attacker (default: its own)")
    p.add_argument("--max-examples", type=arg(int, POSITIVE), default=None, help="attack the first N examples")
    p.add_argument("--k", type=arg(int, POSITIVE), default=20, help="substitutes tried per word")
    p.add_argument("--budget", type=arg(float, PROBABILITY_MASS), default=0.4, help="most words changed, as a share of the example's words")
    p.add_argument("--min-similarity", type=float, default=0.5, help="embeddings: smallest cosine of a substitute")
    p.add_argument("--no-stop-words", action="store_true", help="also replace function words (default: never)")
    p.add_argument("--antonyms", default=None, help="file of 'word antonym' pairs never used as substitutes")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=64, help="victim queries per forward pass")
    p.add_argument("--defend", action="store_true",
                   help="adversarial training: attack the victim's training examples, fine-tune again on the training "
                        "set plus the successful adversarial examples, attack --data again (DIR/defend.json)")
    p.add_argument("--train-examples", type=arg(int, POSITIVE), default=300,
                   help="--defend: attack the first N examples of the victim's training subset")
    p.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from plmkit.analysis import attack as A
    from plmkit.errors import UserError
    from plmkit.knowledge.report import write_json, write_jsonl

    examples = A.read_examples(args.data, args.max_examples)
    if not examples:
        raise UserError(f"{args.data}: no examples")
    victim = A.Victim(args.victim, batch_size=args.batch_size)
    if args.defend:  # its errors (no training options, a pair task, a table without header) before any attack
        A.victim_training_set(args.victim)
    attacker = A.make_attacker(args.attacker, args.k, args.min_similarity, args.attacker_tokenizer)
    attacker.check([w for text, _ in examples[:200] for w in text.split()])
    antonyms = A.read_antonyms(args.antonyms) if args.antonyms else None
    stop = frozenset() if args.no_stop_words else A.STOP_WORDS
    t0 = time.time()
    records = [A.attack_example(victim, text.split(), label, attacker, args.budget, stop, antonyms)
               for text, label in examples]
    summary = A.summarize(records)
    summary.update(victim=args.victim, data=args.data, attacker=args.attacker, attacker_kind=attacker.kind,
                   k=args.k, budget=args.budget, stop_words=not args.no_stop_words,
                   min_similarity=args.min_similarity if attacker.kind == "embeddings" else None,
                   seconds=round(time.time() - t0, 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "adversarial.jsonl", records)
    write_json(out / "attack.json", summary)
    print(f"{summary['n_examples']} examples: accuracy {summary['original_accuracy']:.3f} -> "
          f"{summary['after_attack_accuracy']:.3f} after attack (success rate {summary['success_rate']:.3f}, "
          f"{100 * summary['perturbed_fraction']:.1f}% words changed, {summary['queries_per_example']:.1f} queries "
          f"per example) -> {out}/attack.json", file=sys.stderr)
    if args.defend:
        res = A.adversarial_training(args.victim, attacker, examples, out, summary, args.train_examples, args.budget,
                                     stop, antonyms, args.batch_size, log=lambda m: print(m, file=sys.stderr))
        write_json(out / "defend.json", res)
        b, a = res["before"], res["after"]
        print(f"defended ({res['adversarial_examples_added']} adversarial examples added to {res['train_size']}): "
              f"after-attack accuracy {b['after_attack_accuracy']:.3f} -> {a['after_attack_accuracy']:.3f}, success rate "
              f"{b['success_rate']:.3f} -> {a['success_rate']:.3f}; clean {res['clean_metric']} "
              f"{res['clean_dev_before'] if res['clean_dev_before'] is not None else float('nan'):.3f} -> "
              f"{res['clean_dev_after']:.3f} -> {out}/defend.json", file=sys.stderr)
    return 0
