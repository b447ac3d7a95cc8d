"""Claims about the classical language models (n-gram smoothing and order)."""

from __future__ import annotations

import math

from plmkit.reproduce import stats
from plmkit.reproduce.context import ClaimContext, Outcome
from plmkit.reproduce.registry import claim_runner


def _ppl(x: float) -> float | None:
    return round(x, 2) if math.isfinite(x) else None


@claim_runner
def ngram_order(ctx: ClaimContext) -> Outcome:
    """Interpolated Kneser-Ney perplexity for orders 1..N on the test text, and add-k at each order with k chosen
    on a held-out tenth of the training text (then retrained on all of it): a fair add-k, not add-one."""
    from plmkit.classic.ngram import NgramCounts, build_model, read_sentences

    train = read_sentences(ctx.data(ctx.param("train")))
    test = read_sentences(ctx.data(ctx.param("test")))
    max_order = int(ctx.param("max_order", 4))
    grid = [float(k) for k in ctx.param("k_grid", [1.0, 0.1, 0.01, 0.001])]
    cut = int(len(train) * 0.9)
    fit, dev = train[:cut], train[cut:]

    def one(order: int) -> dict:
        dev_counts = NgramCounts.build(fit, order)
        dev_ppl = {str(k): build_model(dev_counts, "addk", k=k).perplexity(dev) for k in grid}
        best_k = min(grid, key=lambda k: dev_ppl[str(k)])
        counts = NgramCounts.build(train, order)
        return {"order": order, "kn": _ppl(build_model(counts, "kn").perplexity(test)),
                "addk": _ppl(build_model(counts, "addk", k=best_k).perplexity(test)), "k": best_k,
                "dev_ppl_by_k": {k: _ppl(v) for k, v in dev_ppl.items()}}

    rows = [ctx.step(f"order-{n}", lambda n=n: one(n)) for n in range(1, max_order + 1)]
    labels = [f"{r['order']}-gram" for r in rows]
    parts = {"KN perplexity falls with order": stats.ordered([r["kn"] for r in rows], decreasing=True, labels=labels)}
    for r in rows[1:]:
        parts[f"KN beats add-k at order {r['order']}"] = stats.deterministic(
            r["kn"], r["addk"], higher_is_better=False, margin=float(ctx.param("margin", 0.01)),
            what=f"test perplexity, {r['order']}-gram")
    ours = {f"{r['order']}-gram KN": r["kn"] for r in rows} | {f"{r['order']}-gram add-k": r["addk"] for r in rows}
    table = {"columns": ["order", "KN ppl", "add-k ppl", "k (chosen on held-out train)"],
             "rows": [[r["order"], r["kn"], r["addk"], r["k"]] for r in rows]}
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table,
                   details={"train_sentences": len(train), "test_sentences": len(test)})
