"""``plm pretrain RECIPE.yaml --out DIR [KEY=VALUE ...] [--resume] [--overwrite]``.

Runs :func:`plmkit.pipelines.run_pretraining`. Works under ``torchrun --nproc_per_node N -m plmkit pretrain``
(DDP; ``train.distributed=fsdp`` for FSDP). Exit codes: 0 done, 2 bad input (or a damaged checkpoint on
``--resume``: the message names the newest intact one for ``--resume-from``), 3 training diverged (a NaN/inf
loss, gradient norm or weights: the last good checkpoint is kept, ``final/`` is not written), 130 stopped by
Ctrl-C / SIGTERM (a checkpoint was saved; continue with ``--resume``).
"""

from __future__ import annotations

import argparse

HELP = "Pretrain any backbone with any objective from a YAML recipe (resumable, torchrun-ready)."


class _Intermixed(argparse.ArgumentParser):
    """Lets ``KEY=VALUE`` overrides come after options (``RECIPE --out DIR train.lr=1e-3``): plain argparse
    binds a ``nargs="*"`` positional in the first run of positionals only."""

    def parse_known_args(self, args=None, namespace=None):
        if getattr(self, "_inside", False):
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    if not isinstance(parser, _Intermixed):  # keep the parser's own class (plm's one-line errors) too
        parser.__class__ = type("IntermixedParser", (_Intermixed, type(parser)), {})
    parser.add_argument("recipe", help="YAML recipe with sections model, tokenizer, data, objective, train")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides of recipe values, e.g. train.lr=3e-4 train.max_steps=100")
    parser.add_argument("--out", required=True, help="run directory (metrics, checkpoints, final model)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest complete checkpoint")
    parser.add_argument("--resume-from", default=None, metavar="STEP",
                        help="continue the run in --out from this checkpoint (step-N, N or a path); newer "
                             "checkpoints are removed")
    parser.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    parser.add_argument("--encoding-errors", choices=["strict", "replace"], default=None,
                        help="non-UTF-8 bytes in the recipe and the data files: stop at the first (file:line, byte "
                             "offset), or replace each by U+FFFD (sets data.encoding_errors; default: the recipe's)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (default: only when stderr is a terminal; elsewhere a plain "
                             "line every PLMKIT_PROGRESS_EVERY seconds, 20 by default, 0 = none)")


def run(args: argparse.Namespace) -> int:
    from plmkit.errors import UserError
    from plmkit.pipelines.pretrain import run_pretraining

    if (args.resume or args.resume_from is not None) and args.overwrite:
        raise UserError("--resume / --resume-from and --overwrite exclude each other")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"expected KEY=VALUE overrides after the recipe, got {bad[0]!r}")
    summary = run_pretraining(args.recipe, args.out, overrides=args.overrides, resume=args.resume,
                              overwrite=args.overwrite, progress=args.progress,
                              encoding_errors=args.encoding_errors, resume_from=args.resume_from)
    import plmkit.training.distributed as D

    if D.current().is_main:
        from plmkit.training.checkpoint import dumps

        print(dumps({k: v for k, v in summary.items() if not isinstance(v, (dict, list))}))
    return 130 if summary.get("interrupted") else 0
