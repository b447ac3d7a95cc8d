"""What an objective trains on, beyond the token store's plain views (used by ``plm pretrain``).

- ``static_views(objectives, train, valid)``: every objective configured with ``mode: static``
  (MLM and its relatives that offer ``static_view``) gets its own pre-masked view: the training
  examples duplicated ``dup_factor`` times, each copy with its own fixed masks (BERT's
  ``dupe_factor``; RoBERTa, Liu et al. 2019, section 4.1: "the training data was duplicated 10
  times so that each sequence is masked in 10 different ways"). One trainer epoch is one pass over
  all copies, so a run of E epochs sees each masked copy E times. The masks are a pure function of
  ``(seed, index)``, so a resumed run sees exactly the batches of an uninterrupted one (the
  trainer's data cursor only stores positions). Held-out data gets one fixed copy (a deterministic
  evaluation).

Such an objective reads its data under the key ``"<example_kind>/static/<name>"`` (its
``example_kind`` is set to that key on the instance), so a dynamic objective sharing the plain
view is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plmkit.errors import UserError


def is_static(obj: Any) -> bool:
    return getattr(getattr(obj, "config", None), "mode", None) == "static"


def static_views(objectives: Sequence[Any], train: dict[str, Sequence], valid: dict[str, Sequence] | None
                 ) -> tuple[dict[str, Sequence], dict[str, Sequence] | None]:
    """Add one pre-masked view per static objective (see the module docstring); returns (train, valid)."""
    statics = [o for o in objectives if is_static(o)]
    if not statics:
        return train, valid
    train, valid = dict(train), (dict(valid) if valid is not None else None)
    plain_kinds = {getattr(o, "example_kind", "window") for o in objectives if not is_static(o)}
    for obj in statics:
        name = getattr(obj, "name", type(obj).__name__.lower())
        if not callable(getattr(obj, "static_view", None)):
            raise UserError(f"objective {name!r}: mode 'static' is offered by mlm (and its masking variants) only")
        kind = getattr(obj, "example_kind", "window")
        if kind not in train:
            raise UserError(f"objective {name!r}: no {kind!r} data to pre-mask")
        key = f"{kind}/static/{name}"
        if key in train:
            raise UserError(f"two static objectives named {name!r}; give one a distinct 'key'")
        train[key] = obj.static_view(train[kind])
        if valid is not None and kind in valid:
            valid[key] = obj.static_view(valid[kind], dup_factor=1)
        obj.example_kind = key  # the trainer looks data up by example_kind
    for kind in {k.split("/static/")[0] for k in train if "/static/" in k} - plain_kinds:
        train.pop(kind, None)  # only static objectives read it: keep the summary's example count honest
        if valid is not None:
            valid.pop(kind, None)
    return train, valid
