"""``plm report``: one self-contained HTML page of reproduced claims and training runs."""

from __future__ import annotations

import argparse
import sys

HELP = ("Write one self-contained HTML report (claims vs the papers, loss curves, evaluations, configs, "
        "environment) from claim and run directories.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="RUN_OR_CLAIM_DIR",
                   help="claim directories (claim.json, from plm reproduce), run directories (metrics.jsonl, from "
                        "plm pretrain / plm finetune), or folders of them (searched recursively)")
    p.add_argument("--out", required=True, help="the .html file to write (replaced if it exists)")
    p.add_argument("--title", default="plmkit report", help="the page's title")


def run(args: argparse.Namespace) -> int:
    from plmkit.reporting import build_report, describe

    found = build_report(args.paths, args.out, args.title)
    for line in describe(found):
        print(line, file=sys.stderr)
    print(args.out)
    return 0
