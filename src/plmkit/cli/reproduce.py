"""``plm reproduce``: the literature's claims as one-command experiments with a verdict (recipes/claims/*.yaml)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HELP = "Reproduce a claim of the literature in miniature (recipes/claims): run it, write claim.json with a verdict."

EPILOG = """examples:
  plm reproduce --list                                   the claims, their prerequisites and (with --out) verdicts
  plm reproduce ngram-order --out runs/claims/ngram-order
  plm reproduce all --budget small --out runs/claims     every claim into runs/claims/<id>/
  plm reproduce --list --out runs/claims                 the verdict table of a finished 'all' run
A killed run resumes when run again with the same --out (finished steps are kept in DIR/steps/)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("claims", nargs="*", metavar="CLAIM", help="claim ids (see --list), or 'all'")
    p.add_argument("--list", action="store_true", help="list the claims (with --out ROOT: their verdicts there)")
    p.add_argument("--json", action="store_true", help="with --list: JSON instead of a table")
    p.add_argument("--budget", choices=("small", "full"), default="small",
                   help="small: <= 30 min each on a 2-core CPU; full: hours, for bigger machines")
    p.add_argument("--out", default=None, help="output folder (one claim: its folder; several or 'all': a root "
                                               "holding one folder per claim)")
    p.add_argument("--data", default=None, help="the datasets folder (default: $PLMKIT_DATA, else ../shared/data)")
    p.add_argument("--claims-dir", default=None, help="folder of claim files (default: the checkout's recipes/claims)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")


def _data_root(arg: str | None) -> Path:
    return Path(arg or os.environ.get("PLMKIT_DATA") or "../shared/data")


def _listing(claims, data_root: Path, root: Path | None) -> list[dict]:
    rows = []
    for c in claims.values():
        row = {"id": c.id, "claim": c.claim, "missing": c.missing(data_root), "verdict": None, "ours": None}
        d = None
        if root is not None:
            d = root / c.id if (root / c.id / "claim.json").is_file() else (root if (root / "claim.json").is_file() else None)
        if d is not None:
            res = json.loads((d / "claim.json").read_text(encoding="utf-8"))
            if res.get("id") == c.id:
                row.update(verdict=res.get("verdict"), ours=res.get("ours"), budget=res.get("budget"),
                           seconds=res.get("step_seconds") or res.get("seconds"), reference=res.get("reference"))
        rows.append(row)
    return rows


def _short(ours) -> str:
    if not isinstance(ours, dict):
        return ""
    parts = []
    for k, v in list(ours.items())[:4]:
        if isinstance(v, dict) and "mean" in v:
            parts.append(f"{k} {v['mean']:.4g}" + (f"±{v['sd']:.2g}" if v.get("n", 1) > 1 else ""))
        elif isinstance(v, (int, float)):
            parts.append(f"{k} {v:.4g}")
    return "; ".join(parts) + (" ..." if len(ours) > 4 else "")


def run(args: argparse.Namespace) -> int:
    from plmkit.errors import UserError
    from plmkit.reproduce.registry import load_claims

    claims = load_claims(Path(args.claims_dir) if args.claims_dir else None)
    data_root = _data_root(args.data)
    if args.list:
        if args.claims:
            raise UserError("--list takes no CLAIM (it lists them all)")
        root = Path(args.out) if args.out else None
        rows = _listing(claims, data_root, root)
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        width = max(len(r["id"]) for r in rows)
        for r in rows:
            state = r["verdict"] or ("missing: " + r["missing"][0] if r["missing"] else "ready")
            line = f"{r['id']:<{width}}  {state:<12}  {r['claim']}"
            if r.get("ours"):
                line += f"\n{'':<{width}}  {'':<12}  ours: {_short(r['ours'])}"
            print(line)
        return 0
    if not args.claims:
        raise UserError("name a CLAIM (or 'all'), or pass --list; known claims: " + ", ".join(claims))
    ids = list(claims) if args.claims == ["all"] else args.claims
    for cid in ids:
        if cid not in claims:
            from plmkit.errors import suggest

            raise UserError(f"unknown claim {cid!r}{suggest(cid, list(claims))}; known claims: {', '.join(claims)}")
    if not args.out:
        raise UserError("--out DIR is required (where claim.json and the claim's runs go)")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads: expected a positive integer, got {args.threads}")
    for cid in ids:  # every prerequisite is checked before anything runs
        claims[cid].check_prerequisites(data_root)
        claims[cid].params(args.budget)
    from plmkit.reproduce.context import check_out, run_claim

    root = Path(args.out)
    single = len(ids) == 1 and args.claims != ["all"]
    for cid in ids:  # and what --out holds
        check_out(claims[cid], args.budget, root if single else root / cid, args.overwrite)
    failed = []
    for cid in ids:
        out = root if single else root / cid
        print(f"plm reproduce: {cid} ({args.budget}) -> {out}", file=sys.stderr, flush=True)
        try:
            res = run_claim(claims[cid], args.budget, out, data_root, threads=args.threads, overwrite=args.overwrite)
        except UserError as e:
            if single:
                raise
            print(f"plm reproduce: {cid}: error: {e}", file=sys.stderr, flush=True)
            failed.append(cid)
            continue
        print(f"{cid}: {res['verdict']} — {_short(res['ours'])}")
        print(f"  rule: {res['rule']}")
    if failed:
        print(f"plm reproduce: {len(failed)} claim(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
