"""``plm distill``: distil a fine-tuned teacher checkpoint into a smaller student checkpoint.

The flags are generated from :class:`plmkit.compression.distill.DistillConfig` (``plmkit.cli.fields``).
"""

from __future__ import annotations

import argparse

HELP = "Distil a fine-tuned teacher into a smaller student (DistilBERT, TinyBERT, PKD, MiniLM losses; BERT-of-Theseus)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from plmkit.cli.fields import add_dataclass_options
    from plmkit.compression.distill import DistillConfig

    add_dataclass_options(p, DistillConfig)


def run(args: argparse.Namespace) -> int:
    from plmkit.cli.fields import given_options, missing_required
    from plmkit.compression.distill import DistillConfig, distill
    from plmkit.errors import UserError

    values = given_options(args, DistillConfig)
    missing = missing_required(values, DistillConfig)
    if missing:
        raise UserError(f"missing required option(s) {', '.join(missing)}")
    cfg = DistillConfig(**values)
    res = distill(cfg)
    print(f"{res['task']} ({res['method']}, {res['student_layers']} of {res['teacher_layers']} layers): "
          f"{res['main_metric']} = {res[res['main_metric']]:.4f}; {cfg.out}/eval.json")
    return 0
