"""The literature's claims as one-command experiments (``plm reproduce``).

- ``registry``: claim files (``recipes/claims/<id>.yaml``), their prerequisites and runners.
- ``context``: :class:`ClaimContext` (resumable steps, training runs, child ``plm`` commands) and
  :func:`run_claim`, which writes ``DIR/claim.json`` = ``{"id", "claim", "reference", "ours", "verdict", "rule", ...}``.
- ``stats``: the verdict rules (paired differences with standard errors, deterministic margins, orderings).
- ``experiments``: the runners, one module per area.
"""
