"""A fake ``plm reproduce`` output (the claim.json schema) with training runs inside it, and a stand-alone run:
synthetic but shaped like the real files (``plm pretrain``'s metrics.jsonl / eval.jsonl / recipe.yaml)."""

from __future__ import annotations

import json
import math
from pathlib import Path

INJECT = '<img src=x onerror="window.__pwned=1"></td><script>window.__pwned=2</script>'


def write_run(d: Path, steps: int = 40, scale: float = 1.0, seed: int = 0, model: str | None = None,
              evals: bool = True, recipe: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "metrics.jsonl", "a", encoding="utf-8") as f:
        for s in range(5, steps + 1, 5):
            rec = {"step": s, "loss": scale * (4.0 * math.exp(-s / 15) + 1.0 + 0.01 * seed),
                   "lr": 1e-3 * min(1.0, s / 10), "grad_norm": 2.0 / math.sqrt(s), "tokens_per_s": 9000 + 10 * s}
            if model:
                rec["model"] = model
            f.write(json.dumps(rec) + "\n")
    if evals:
        with open(d / "eval.jsonl", "a", encoding="utf-8") as f:
            for s in range(20, steps + 1, 20):
                f.write(json.dumps({"step": s, "loss": scale * (4.0 * math.exp(-s / 15) + 1.2), "ppl": 3.0 + 10 / s,
                                    "targets": 4000}) + "\n")
    if recipe:
        (d / "recipe.yaml").write_text(f"model: {{preset: gpt2-tiny}}\ntrain: {{max_steps: {steps}, seed: {seed}}}\n",
                                       encoding="utf-8")
    return d


def fake_claim(root: Path, cid: str = "ngram-order", verdict: str = "held", claim_text: str | None = None,
               runs: int = 2) -> Path:
    d = root / cid
    names = []
    for i in range(runs):
        write_run(d / "runs" / f"arm-{i}", scale=1.0 + 0.1 * i, seed=i)
        names.append(f"runs/arm-{i}")
    data = {
        "id": cid,
        "claim": claim_text or "Perplexity falls with n-gram order and Kneser-Ney beats add-k.",
        "reference": {"source": "seed table (Jurafsky & Martin)", "figures": {"ppl_1gram": 962, "ppl_4gram": 99}},
        "ours": {"ppl_1gram": {"mean": 701.3, "sd": 2.1, "n": 3, "values": [699.0, 701.5, 703.4]},
                 "ppl_4gram": {"mean": 181.2, "sd": 1.4, "n": 3, "values": [180.0, 181.0, 182.6]}},
        "verdict": verdict,
        "rule": "paired difference > 2 standard errors over 3 seeds",
        "budget": "small",
        "seconds": 123.4,
        "environment": {"python": "3.11.2", "torch": "2.13.0", "plmkit": "0.1.0", "threads": 1,
                        "git_revision": "abc1234", "host": "test-host"},
        "table": {"columns": ["order", "add-k", "KN"], "rows": [[1, 962.0, 955.1], [2, 210.4, 170.2]]},
        "runs": names,
    }
    (d / "claim.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return d
