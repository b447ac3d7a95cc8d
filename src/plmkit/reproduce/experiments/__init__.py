"""Claim runners, one module per area. A runner is ``@claim_runner def name(ctx: ClaimContext) -> Outcome``; claim
files under ``recipes/claims/`` name it as ``MODULE:FUNCTION`` (``classic:ngram_order``)."""
