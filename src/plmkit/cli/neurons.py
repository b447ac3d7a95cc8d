"""``plm neurons``: knowledge neurons (Dai et al. 2022) of an MLM or a causal LM.

    plm neurons find --model M --facts FILE [--n N] [--steps 20] [--threshold 0.2] [--share 0.7] --out DIR
    plm neurons edit --model M --neurons DIR/neurons.json (--suppress | --amplify | --erase | --update) --out DIR

``find`` writes ``DIR/neurons.json`` (per fact: prompts, target, knowledge neurons [layer, index] and
each prompt's top attributions). ``edit`` measures the relative change of P(correct) on the fact's
own prompts and on the prompts of other facts (of other relations when the file names relations)
and writes ``DIR/edit_<mode>.json``. Conventions: ``plmkit.knowledge.neurons``.
"""

from __future__ import annotations

import argparse

from plmkit.checks import POSITIVE, PROBABILITY_MASS, arg

HELP = "Knowledge neurons: find them by integrated gradients, then suppress / amplify / erase / update."

MODES = ("suppress", "amplify", "erase", "update")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    f = sub.add_parser("find", help="attribute every FFN neuron and keep the knowledge neurons of each fact",
                       description="Integrated-gradients attribution of FFN neurons (Dai et al. 2022).", formatter_class=fmt)
    f.add_argument("--model", required=True, help="HF-format model directory, .gguf file, or preset (with --tokenizer)")
    f.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's own)")
    f.add_argument("--facts", required=True, help="facts: {prompts, target, relation} JSON/JSONL, known_1000 or CounterFact")
    f.add_argument("--n", type=int, default=None, help="use the first N facts")
    f.add_argument("--steps", type=arg(int, POSITIVE), default=20, help="Riemann steps of the integrated gradients")
    f.add_argument("--threshold", type=arg(float, PROBABILITY_MASS), default=0.2, help="t: keep neurons above t x max attribution")
    f.add_argument("--share", type=arg(float, PROBABILITY_MASS), default=0.7, help="p: keep neurons found for >= p of the fact's prompts")
    f.add_argument("--no-adapt", action="store_true", help="do not move p by 0.05 towards 2..5 neurons")
    f.add_argument("--layers", default="all", help="layers to attribute: 'all', indices '3,5' or a range '15-29'")
    f.add_argument("--out", required=True, help="output directory")
    e = sub.add_parser("edit", help="suppress / amplify / erase / update the knowledge neurons and measure P(correct)",
                       description="Edit knowledge neurons found by 'plm neurons find'.", formatter_class=fmt)
    e.add_argument("--model", required=True, help="the model the neurons were found in")
    e.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's own)")
    e.add_argument("--neurons", required=True, help="neurons.json written by 'plm neurons find'")
    g = e.add_mutually_exclusive_group(required=True)
    for m, what in (("suppress", "set their activations to 0"), ("amplify", "double their activations"),
                    ("erase", "set their value vectors to the unknown-token embedding (0 without one)"),
                    ("update", "value vectors -= lambda1 e(old) and += lambda2 e(new) (needs target_new)")):
        g.add_argument(f"--{m}", dest="mode", action="store_const", const=m, help=what)
    e.add_argument("--lambda1", type=float, default=1.0, help="update: weight of the old object's embedding")
    e.add_argument("--lambda2", type=float, default=8.0, help="update: weight of the new object's embedding")
    e.add_argument("--controls", type=int, default=10, help="other facts measured per edited fact")
    e.add_argument("--seed", type=int, default=0, help="seed for choosing the control facts")
    e.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    return _find(args) if args.action == "find" else _edit(args)


def parse_layers(value: str, num_layers: int) -> list[int]:
    """'all', '3,5' or '15-29' -> layer indices (UserError when malformed or out of range)."""
    from plmkit.errors import UserError

    v = value.strip()
    if v == "all":
        return list(range(num_layers))
    try:
        if "-" in v:
            a, b = (int(x) for x in v.split("-", 1))
            out = list(range(a, b + 1))
        else:
            out = [int(x) for x in v.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--layers {value!r}: expected 'all', '3,5' or '15-29'") from None
    bad = [x for x in out if not 0 <= x < num_layers]
    if bad or not out:
        raise UserError(f"--layers {value!r}: the model has layers 0..{num_layers - 1}")
    return out


def _find(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from plmkit.knowledge import neurons as kn
    from plmkit.knowledge import report
    from plmkit.knowledge.loading import load_for_knowledge

    facts = kn.read_facts(args.facts, args.n)
    model, tok, struct = load_for_knowledge(args.model, args.tokenizer)
    layers = parse_layers(args.layers, struct.num_layers)
    model.requires_grad_(False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, f in enumerate(facts):
        t0 = time.time()
        prompts = [kn.encode_prompt(struct, tok, p, f.target) for p in f.prompts]
        attrs = [kn.attribute(struct, p, args.steps, layers) for p in prompts]
        f.neurons, share = kn.select(attrs, args.threshold, args.share, adapt=not args.no_adapt)
        before = kn.probs(struct, prompts)
        tops = []
        for a in attrs:
            v, i = a.flatten().topk(10)
            tops.append([[int(j) // a.shape[1], int(j) % a.shape[1], round(float(x), 6)] for x, j in zip(v, i)])
        rows.append({"id": f.id, "relation": f.relation, "target": f.target, "target_new": f.target_new,
                     "prompts": f.prompts, "neurons": [list(n) for n in f.neurons], "share_used": share,
                     "p_correct": before, "top_attributions": tops, "seconds": round(time.time() - t0, 1)})
        print(f"[{k + 1}/{len(facts)}] {f.prompts[0]!r} -> {f.target!r}: {len(f.neurons)} neurons "
              f"{f.neurons[:8]} ({time.time() - t0:.0f}s)", flush=True)
    report.write_json(out / "neurons.json", {"model": str(args.model), "steps": args.steps, "layers": layers,
                                             "threshold": args.threshold, "share": args.share, "facts": rows})
    print(f"wrote {out / 'neurons.json'}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    import json
    import random
    from pathlib import Path

    from plmkit.errors import UserError
    from plmkit.knowledge import neurons as kn
    from plmkit.knowledge import report
    from plmkit.knowledge.loading import load_for_knowledge

    path = Path(args.neurons)
    if not path.is_file():
        raise UserError(f"{path}: neurons file not found (run 'plm neurons find' first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["facts"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: expected the neurons.json written by 'plm neurons find'") from None
    model, tok, struct = load_for_knowledge(args.model, args.tokenizer)
    for r in rows:
        for layer, i in r["neurons"]:
            if not (0 <= layer < struct.num_layers and 0 <= i < struct.intermediate_size):
                raise UserError(f"{path}: fact {r['id']}: neuron ({layer}, {i}) does not exist in this model")
    enc = {r["id"]: [kn.encode_prompt(struct, tok, p, r["target"]) for p in r["prompts"]] for r in rows}
    rng = random.Random(args.seed)
    results = []
    for r in rows:
        if not r["neurons"]:
            continue
        neurons = [tuple(n) for n in r["neurons"]]
        others = [o for o in rows if o["id"] != r["id"] and (r["relation"] is None or o["relation"] != r["relation"])]
        controls = rng.sample(others, min(args.controls, len(others)))
        ctl_prompts = [p for o in controls for p in enc[o["id"]]]
        own = enc[r["id"]]
        if args.mode == "suppress":
            ctx = kn.scale_neurons(struct, neurons, 0.0)
        elif args.mode == "amplify":
            ctx = kn.scale_neurons(struct, neurons, 2.0)
        elif args.mode == "erase":
            ctx = kn.set_values(struct, neurons, new=kn.word_embedding(struct, tok, None))
        else:
            if not r.get("target_new"):
                raise UserError(f"{path}: fact {r['id']} has no target_new to update to")
            delta = -args.lambda1 * kn.word_embedding(struct, tok, r["target"]) + \
                args.lambda2 * kn.word_embedding(struct, tok, r["target_new"])
            ctx = kn.set_values(struct, neurons, delta=delta)
        before_own, before_ctl = kn.probs(struct, own), kn.probs(struct, ctl_prompts)
        new_t = None
        if args.mode == "update":
            new_t = [kn.encode_prompt(struct, tok, p, r["target_new"]).target for p in r["prompts"]]
            before_new = kn.probs(struct, own, new_t)
        with ctx:
            after_own, after_ctl = kn.probs(struct, own), kn.probs(struct, ctl_prompts)
            after_new = kn.probs(struct, own, new_t) if new_t else None
        res = {"id": r["id"], "neurons": r["neurons"], "own_before": before_own, "own_after": after_own,
               "own_change_pct": kn.relative_change(before_own, after_own),
               "control_change_pct": kn.relative_change(before_ctl, after_ctl), "n_control_prompts": len(ctl_prompts)}
        if new_t:
            res.update(new_before=before_new, new_after=after_new,
                       new_change_pct=kn.relative_change(before_new, after_new))
        results.append(res)
        print(f"{r['id']}: {len(neurons)} neurons, P(correct) own {res['own_change_pct']:+.1f}%, "
              f"other facts {res['control_change_pct'] if res['control_change_pct'] is not None else float('nan'):+.1f}%"
              + (f", P(new) {res['new_change_pct']:+.1f}%" if new_t else ""))
    if not results:
        raise UserError(f"{path}: no fact has knowledge neurons to edit")

    def mean(key: str) -> float | None:
        vals = [x[key] for x in results if x.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    summary = {"mode": args.mode, "n_facts": len(results), "own_change_pct": mean("own_change_pct"),
               "control_change_pct": mean("control_change_pct"), "facts": results}
    if args.mode == "update":
        summary["new_change_pct"] = mean("new_change_pct")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / f"edit_{args.mode}.json", summary)
    print(f"{args.mode}: mean change of P(correct) on the facts' own prompts {summary['own_change_pct']:+.1f}%, "
          f"on other facts {summary['control_change_pct'] or 0:+.1f}% ({len(results)} facts); "
          f"wrote {out / f'edit_{args.mode}.json'}")
    return 0
