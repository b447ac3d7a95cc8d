"""What every editing method shares: requests, exact deltas (undo bit for bit), tokens, keys and v*.

Conventions (see ``plmkit.knowledge.structure``):
- The edited matrix of layer l is the FFN value matrix ``W = down(l).weight`` (H x I). Its *key* at a
  token is the input of ``down`` there (I,), i.e. the FFN intermediate activation; its *value* ``W k``
  (+ bias) is the MLP output (H,) added to the residual stream.
- A request's target is scored as the tokens of ``" " + target`` after the prompt (CounterFact's and
  zsRE's objects have no leading space; the prompts end without one).
- The subject's *last token* is the last token whose characters overlap the subject's first occurrence
  in the prompt.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.knowledge.lama import front_specials
from plmkit.knowledge.structure import ModelStructure, intervene


# ------------------------------------------------------------------------------------------ requests
@dataclass
class Request:
    """One fact to write: ``prompt`` mentions ``subject`` and should continue with ``target_new``."""

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "request") -> "Request":
        try:
            return cls(prompt=d["prompt"], subject=d["subject"], target_new=d["target_new"],
                       target_true=d.get("target_true"))
        except KeyError as e:
            raise UserError(f"{where}: missing key {e.args[0]!r} (expected prompt, subject, target_new"
                            "[, target_true])") from None

    def validate(self, where: str = "request") -> "Request":
        """Refuse (UserError, one line) what cannot be edited."""
        for k in ("prompt", "subject", "target_new"):
            if not isinstance(getattr(self, k), str):
                raise UserError(f"{where}: {k} must be a string, got {type(getattr(self, k)).__name__}")
        if not self.subject.strip():
            raise UserError(f"{where}: empty subject")
        if not self.target_new.strip():
            raise UserError(f"{where}: empty target for prompt {self.prompt!r}")
        if self.subject not in self.prompt:
            raise UserError(f"{where}: subject {self.subject!r} not found in prompt {self.prompt!r}")
        if self.target_true is not None and self.target_true.strip() == self.target_new.strip():
            raise UserError(f"{where}: the new target {self.target_new!r} is the true object already "
                            f"(nothing to edit for {self.prompt!r})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "subject": self.subject, "target_new": self.target_new,
                "target_true": self.target_true}


# ------------------------------------------------------------------------------------------ deltas
@dataclass
class Delta:
    """The exact change an edit made: for each touched parameter its original values and new - old.

    ``undo`` copies ``original`` back, so the weights are restored bit for bit (``new - delta`` would
    not be, in floating point). ``info`` holds the provenance (method, layers, norms).
    """

    original: dict[str, Tensor] = field(default_factory=dict)
    delta: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def norms(self) -> dict[str, float]:
        return {k: float(v.double().norm()) for k, v in self.delta.items()}


def param_name(model: torch.nn.Module, p: Tensor) -> str:
    for n, q in model.named_parameters(remove_duplicate=False):
        if q is p:
            return n
    raise ValueError("parameter not found in the model")


class Recorder:
    """Snapshot parameters before an edit; ``finish()`` returns the ``Delta`` of what changed."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.saved: dict[str, tuple[Tensor, Tensor]] = {}

    def watch(self, p: Tensor) -> Tensor:
        name = param_name(self.model, p)
        if name not in self.saved:
            self.saved[name] = (p, p.detach().clone())
        return p

    def finish(self, **info: Any) -> Delta:
        d = Delta(info=dict(info))
        for name, (p, orig) in self.saved.items():
            d.original[name] = orig
            d.delta[name] = p.detach().float() - orig.float()
        d.info.setdefault("delta_norm", {k: round(v, 6) for k, v in d.norms().items()})
        return d

    def restore(self) -> None:
        with torch.no_grad():
            for p, orig in self.saved.values():
                p.copy_(orig)


def undo(model: torch.nn.Module, delta: Delta) -> None:
    """Restore the parameters an edit changed to their exact original values."""
    with torch.no_grad():
        for name, orig in delta.original.items():
            model.get_parameter(name).copy_(orig)


def add_(p: Tensor, upd: Tensor) -> None:
    with torch.no_grad():
        p.add_(upd.to(p.dtype))


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """No parameter requires grad inside (restored after)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


# ------------------------------------------------------------------------------------------ tokens
def target_ids(tok: Any, target: str) -> list[int]:
    ids = list(tok.encode(" " + target.strip(), add_special_tokens=False))
    if not ids:
        raise UserError(f"target {target!r} has no tokens")
    return ids


@dataclass
class Encoded:
    """A prompt's ids (front specials + text) and the index of the subject's last token (or -1)."""

    ids: list[int]
    subject_last: int


def encode(tok: Any, text: str, subject: str | None = None, char_start: int | None = None) -> Encoded:
    """Token ids of ``text`` for a causal LM and the position of ``subject``'s last token.

    ``char_start``: where the subject starts in ``text`` (default: its first occurrence)."""
    front = front_specials(tok)
    body = list(tok.encode(text, add_special_tokens=False))
    ids = front + body
    if subject is None:
        return Encoded(ids, -1)
    start = text.find(subject) if char_start is None else char_start
    if start < 0:
        raise UserError(f"subject {subject!r} not found in prompt {text!r}")
    end = start + len(subject)
    last = None
    prev = 0
    for i in range(len(body)):
        hi = len(tok.decode(body[: i + 1]))
        if hi > start and prev < end:
            last = i
        prev = hi
        if prev >= end and last is not None:
            break
    if last is None:
        raise UserError(f"subject {subject!r} covers no token of prompt {text!r}")
    return Encoded(ids, len(front) + last)


def pad_batch(seqs: list[list[int]], pad: int = 0) -> tuple[Tensor, Tensor]:
    """Right-padded (B, T) ids and attention mask."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
    return ids, mask


def logits_at(struct: ModelStructure, seqs: list[list[int]], positions: list[list[int]]) -> list[Tensor]:
    """Logits (n_b, V) at the given positions of each sequence (one batched forward, only those rows)."""
    ids, mask = pad_batch(seqs)
    sel = torch.zeros_like(ids, dtype=torch.bool)
    for b, ps in enumerate(positions):
        sel[b, ps] = True
    out = struct.model(ids, attention_mask=mask, labels_mask=sel).logits.float()  # (N, V) row-major
    res, k = [], 0
    for b, ps in enumerate(positions):
        # rows of sel come in increasing position order within a sequence
        order = sorted(range(len(ps)), key=lambda j: ps[j])
        rows = out[k: k + len(ps)]
        back = torch.empty_like(rows)
        for r, j in enumerate(order):
            back[j] = rows[r]
        res.append(back)
        k += len(ps)
    return res


def target_logprobs(struct: ModelStructure, prompt_ids: list[list[int]], targets: list[list[int]]) -> Tensor:
    """Full log P(target tokens | prompt) for each (prompt, target) pair: (N,) summed over the tokens."""
    seqs = [p + t[:-1] for p, t in zip(prompt_ids, targets)]
    pos = [list(range(len(p) - 1, len(p) - 1 + len(t))) for p, t in zip(prompt_ids, targets)]
    out = []
    for lg, t in zip(logits_at(struct, seqs, pos), targets):
        lp = lg.log_softmax(-1)
        out.append(lp[torch.arange(len(t)), torch.tensor(t)].sum())
    return torch.stack(out)


def target_token_accuracy(struct: ModelStructure, prompt_ids: list[list[int]], targets: list[list[int]]) -> list[float]:
    """Teacher-forced token accuracy of each target (argmax == target token), ROME's zsRE measure."""
    seqs = [p + t[:-1] for p, t in zip(prompt_ids, targets)]
    pos = [list(range(len(p) - 1, len(p) - 1 + len(t))) for p, t in zip(prompt_ids, targets)]
    return [float((lg.argmax(-1) == torch.tensor(t)).float().mean())
            for lg, t in zip(logits_at(struct, seqs, pos), targets)]


# ------------------------------------------------------------------------------------------ contexts
_CONTEXTS: dict[tuple, list[str]] = {}


def context_templates(struct: ModelStructure, tok: Any, n: int, length: int, seed: int = 0) -> list[str]:
    """``["{}"]`` + ``n`` templates ``"<sampled text>. {}"`` (ROME's random prefixes: the model samples
    ``length`` tokens after a few common opening words, top-k 5). Sampled once per (model, n, length,
    seed) and reused, so every edit of a run sees the same prefixes."""
    key = (id(struct.model), n, length, seed)
    if key in _CONTEXTS:
        return _CONTEXTS[key]
    out = ["{}"]
    if n > 0:
        from plmkit.generation import generate

        starts = ["The", "Therefore", "Because", "I", "You", "It", "When", "In"]
        g = torch.Generator().manual_seed(seed)
        for i in range(n):
            ids = torch.tensor([encode(tok, starts[i % len(starts)]).ids])
            with torch.no_grad():
                gen = generate(struct.model, ids, max_new_tokens=length, do_sample=True, top_k=5,
                               generator=g, pack_weights=False)
            text = tok.decode(gen[0, ids.shape[1]:].tolist()) if gen.shape[1] > ids.shape[1] else ""
            text = (starts[i % len(starts)] + text).replace("{", " ").replace("}", " ").replace("\n", " ")
            out.append(text.strip() + ". {}")
    _CONTEXTS[key] = out
    return out


def in_context(template: str, prompt: str, subject: str) -> tuple[str, int]:
    """(text, char index of the subject inside the prompt part)."""
    head = template.index("{}")
    text = template.replace("{}", prompt)
    return text, head + prompt.index(subject)


# ------------------------------------------------------------------------------------------ keys
class _Stop(Exception):
    pass


@torch.no_grad()
def keys_at(struct: ModelStructure, layer: int, seqs: list[list[int]], positions: list[int]) -> Tensor:
    """The FFN keys (input of ``down``) of ``layer`` at one position per sequence: (B, I).

    The forward stops right after ``layer``'s FFN intermediate activation is read."""
    got: list[Tensor] = []

    def grab(i: int, a: Tensor) -> None:
        got.append(a[torch.arange(a.shape[0]), torch.tensor(positions)].float())
        raise _Stop

    ids, mask = pad_batch(seqs)
    with intervene(struct, "neurons", grab, layers=[layer]):
        try:
            struct.model(ids, attention_mask=mask, labels_mask=torch.zeros_like(ids, dtype=torch.bool))
        except _Stop:
            pass
    return got[0]


def subject_key(struct: ModelStructure, tok: Any, layer: int, req: Request, templates: list[str]) -> Tensor:
    """k*: the mean key at the subject's last token over the prompt in every context template (I,)."""
    return subject_keys(struct, tok, layer, [req], templates)[0]


def subject_keys(struct: ModelStructure, tok: Any, layer: int, reqs: list[Request], templates: list[str],
                 rows_per_forward: int = 64) -> Tensor:
    """k* of each request (n, I): the keys of all requests x templates in batched forwards."""
    seqs, pos = [], []
    for req in reqs:
        for t in templates:
            text, cs = in_context(t, req.prompt, req.subject)
            e = encode(tok, text, subject=req.subject, char_start=cs)
            seqs.append(e.ids)
            pos.append(e.subject_last)
    keys = torch.cat([keys_at(struct, layer, seqs[i: i + rows_per_forward], pos[i: i + rows_per_forward])
                      for i in range(0, len(seqs), rows_per_forward)])
    return keys.view(len(reqs), len(templates), -1).mean(1)


def value_output(struct: ModelStructure, layer: int, k: Tensor) -> Tensor:
    """What ``down`` of ``layer`` makes of the key ``k``: W k (+ bias), float (H,)."""
    down = struct.down(layer)
    out = down.weight.detach().float() @ k.float()
    if down.bias is not None:
        out = out + down.bias.detach().float()
    return out


# ------------------------------------------------------------------------------------------ v* / z*
@dataclass
class VParams:
    """The optimisation of the residual shift delta that makes the model say the new target (ROME's v*)."""

    steps: int = 20
    lr: float = 0.5
    kl_factor: float = 0.0625
    weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    nll_stop: float = 0.05


@dataclass
class KeyValueParams:
    """What ROME and MEMIT share: the edited layer(s), the random context prefixes over which the key k* is
    averaged (``n_context`` sampled prefixes of ``context_length`` tokens, seeded), the v* optimisation, and
    whether the update is weighted by the key covariance C (False: C = I)."""

    layers: list[int] | None = None
    """ROME: one layer (it edits a single MLP); MEMIT: the critical range ending at the layer causal tracing
    picks for the MLP (see docs/EDITING.md)."""
    n_context: int = 10
    context_length: int = 10
    context_seed: int = 0
    v: VParams = field(default_factory=VParams)
    covariance: bool = True


class SplitForward:
    """Forwards of rows that are only ever changed from one position on (the subject's last token).

    Causal attention: the positions before row b's ``split[b]`` never see a shift applied at
    ``split[b]`` or later, at any layer, so their keys / values are computed once here (no grad) and
    every later forward (``logits``) runs only the suffixes ``row[split[b]:]`` against them, like a
    decoding step with a cache. The prefixes are left-padded to a common length so every suffix
    starts right after its own prefix; the positions passed to the model are the rows' own. The
    results equal the full forward up to float rounding (tested, gradients included)."""

    def __init__(self, struct: ModelStructure, rows: list[list[int]], split: list[int]) -> None:
        self.struct = struct
        self.split = list(split)
        self.P = max(self.split)
        self.suffixes = [r[s:] for r, s in zip(rows, self.split)]
        B, T = len(rows), max(len(x) for x in self.suffixes)
        offset = int(getattr(struct.model.config, "position_offset", 0) or 0)
        pre_mask = torch.zeros((B, self.P), dtype=torch.long)
        pre_ids = torch.zeros((B, self.P), dtype=torch.long)
        for b, (r, s) in enumerate(zip(rows, self.split)):
            pre_mask[b, self.P - s:] = 1
            if s:
                pre_ids[b, self.P - s:] = torch.tensor(r[:s])
        self.ids, suf_mask = pad_batch(self.suffixes)
        self.mask = torch.cat((pre_mask, suf_mask), 1)
        start = torch.tensor(self.split)[:, None]
        self.positions = start + torch.arange(T)[None] + offset
        self.cache = _FrozenPrefix(self.P)
        if self.P:
            pos = (torch.arange(self.P)[None] - (self.P - start)).clamp(min=0) + offset
            with torch.no_grad():
                struct.model(pre_ids, attention_mask=pre_mask, position_ids=pos, past_key_values=self.cache,
                             labels_mask=torch.zeros_like(pre_ids, dtype=torch.bool))
        self.cache.frozen = True

    def logits(self, positions: list[list[int]]) -> Tensor:
        """Logits (N, V) at the given positions (of the full rows, each >= the row's split), row by
        row in increasing position order."""
        sel = torch.zeros_like(self.ids, dtype=torch.bool)
        for b, ps in enumerate(positions):
            sel[b, [p - self.split[b] for p in ps]] = True
        out = self.struct.model(self.ids, attention_mask=self.mask, position_ids=self.positions,
                                past_key_values=self.cache if self.P else None, labels_mask=sel)
        return out.logits.float()


class _FrozenPrefix:
    """A ``KVCache`` look-alike that records the prefix pass's keys / values per layer and then serves
    them (concatenated with each forward's own, nothing written in place, so gradients flow)."""

    def __init__(self, length: int) -> None:
        self.length, self.frozen = length, False
        self.k: dict[int, Tensor] = {}
        self.v: dict[int, Tensor] = {}
        self.key_mask = None

    def __len__(self) -> int:
        return self.length if self.frozen else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if not self.frozen:
            self.k[layer], self.v[layer] = k.detach(), v.detach()
            return k, v
        return torch.cat((self.k[layer], k), 2), torch.cat((self.v[layer], v), 2)

    def set_key_mask(self, mask: Tensor, start: int) -> Tensor:
        if start != 0:
            raise ValueError("_FrozenPrefix expects the attention mask of prefix + suffix")
        return mask.to(torch.bool)

    def advance(self, num_tokens: int) -> None:
        pass


def optimise_delta(struct: ModelStructure, tok: Any, req: Request, site: str, layer: int,
                   templates: list[str], vp: VParams, log: list[dict] | None = None) -> tuple[Tensor, Tensor]:
    """delta (H,) added to ``site`` ("mlp": the MLP output, "layer": the block output) of ``layer`` at the
    subject's last token of every rewriting prompt, and the clean value there (H,) for the plain prompt.

    Loss (ROME eq. 4): mean NLL of the new target's tokens after the prompt in each context template
    + ``kl_factor`` x KL(P_clean || P_edited) of the next token after "{subject} is a" (the "essence")
    + ``weight_decay`` x ||delta||^2 / ||clean value||^2; after each Adam step ||delta|| is clamped to
    ``clamp_norm_factor`` x ||clean value||. Stops early when the NLL < ``nll_stop``. ``log`` receives
    one {step, nll, kl, norm} per step (the optimisation curve).

    All rows (the prompt in every context template + the KL prompt) go through one batched forward
    per step, and only from the subject's last token on (``SplitForward``: the tokens before it cannot
    see delta); the clean distribution and value are read from step 0, where delta = 0."""
    deltas, cleans = optimise_deltas(struct, tok, [req], site, layer, templates, vp,
                                     None if log is None else [log])
    return deltas[0], cleans[0]


def optimise_deltas(struct: ModelStructure, tok: Any, reqs: list[Request], site: str, layer: int,
                    templates: list[str], vp: VParams, logs: list[list[dict]] | None = None
                    ) -> tuple[Tensor, Tensor]:
    """``optimise_delta`` for several requests at once, each with its own delta (n, H) and clean value
    (n, H), on the same (unedited) weights.

    The rows of every request share one forward per step; request i's delta is added only at its own
    rows, and the loss is the sum of the requests' losses, so each delta gets exactly its own
    gradient, and Adam (element-wise, all started together) moves it as it would alone. A request
    whose NLL falls below ``nll_stop`` is frozen from that step on (its rows are still computed); the
    norm clamp and the weight decay use each request's own clean value. Equal to one call per request
    up to float rounding (tested)."""
    n_rw = len(templates)
    rows, split, sel, owner, tgts = [], [], [], [], []
    for i, req in enumerate(reqs):
        tgt = target_ids(tok, req.target_new)
        tgts.append(tgt)
        for t in templates:
            text, cs = in_context(t, req.prompt, req.subject)
            e = encode(tok, text, req.subject, cs)
            rows.append(e.ids + tgt[:-1])
            split.append(e.subject_last)
            sel.append(list(range(len(e.ids) - 1, len(e.ids) - 1 + len(tgt))))
        ke = encode(tok, f"{req.subject} is a", req.subject, 0)
        rows.append(ke.ids)
        split.append(ke.subject_last)
        sel.append([len(ke.ids) - 1])
        owner += [i] * (n_rw + 1)
    n = len(reqs)
    fwd = SplitForward(struct, rows, split)
    first = torch.tensor([i * (n_rw + 1) for i in range(n)])  # each request's bare-prompt row
    owner_t = torch.tensor(owner)
    where = torch.zeros(fwd.ids.shape + (1,))
    where[:, 0] = 1.0  # the subject's last token starts every suffix
    # the logits rows come row by row, each row's positions in order: request i's target rows, then its KL row
    tgt_rows, tgt_ids, kl_rows, k = [], [], [], 0
    for i in range(n):
        m = n_rw * len(tgts[i])
        tgt_rows.append(torch.arange(k, k + m))
        tgt_ids.append(torch.tensor(tgts[i] * n_rw))
        kl_rows.append(k + m)
        k += m + 1
    kl_rows_t = torch.tensor(kl_rows)

    clean: list[Tensor] = []
    delta = torch.zeros((n, struct.hidden_size), requires_grad=True)
    opt = torch.optim.Adam([delta], lr=vp.lr)

    def shift(_: int, out: Tensor) -> Tensor:
        if not clean:  # step 0: delta = 0, the clean output
            clean.append(out[first, 0].detach().float().clone())
        return out + (where * delta[owner_t][:, None, :]).to(out.dtype)

    init_kl = base_norm = None
    done = torch.zeros(n, dtype=torch.bool)
    for step in range(vp.steps):
        opt.zero_grad()
        with intervene(struct, site, shift, layers=[layer]):
            lg = fwd.logits(sel)
        if init_kl is None:
            init_kl = lg[kl_rows_t].detach().log_softmax(-1)
            base_norm = clean[0].norm(dim=-1)
        nll = torch.stack([-lg[r].log_softmax(-1)[torch.arange(len(r)), t].sum() / n_rw / len(tgts[i])
                           for i, (r, t) in enumerate(zip(tgt_rows, tgt_ids))])
        kl = torch.nn.functional.kl_div(lg[kl_rows_t].log_softmax(-1), init_kl, log_target=True,
                                        reduction="none").sum(-1)
        wd = delta.norm(dim=-1) ** 2 / base_norm ** 2
        loss = nll + vp.kl_factor * kl + vp.weight_decay * wd
        nll_d, kl_d, norm_d = nll.detach(), kl.detach(), delta.detach().norm(dim=-1)
        for i in range(n):
            if done[i]:
                continue
            if logs is not None:
                logs[i].append({"step": step, "nll": round(float(nll_d[i]), 5), "kl": round(float(kl_d[i]), 5),
                                "norm": round(float(norm_d[i]), 4)})
            if float(nll_d[i]) < vp.nll_stop:
                done[i] = True
        if bool(done.all()):
            break
        keep = delta.detach()[done].clone()
        loss[~done].sum().backward()
        opt.step()
        with torch.no_grad():
            lim = vp.clamp_norm_factor * base_norm
            norms = delta.norm(dim=-1)
            over = norms > lim
            delta[over] *= (lim[over] / norms[over])[:, None]
            delta[done] = keep
    if not clean:  # steps = 0
        with torch.no_grad(), intervene(struct, site, shift, layers=[layer]):
            fwd.logits(sel)
    return delta.detach(), clean[0]


def dataclass_from(cls: type, d: dict[str, Any] | None, where: str) -> Any:
    """``cls(**d)`` with one-line errors for unknown keys or wrong types."""
    d = dict(d or {})
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(names))}")
    out = {}
    for k, v in d.items():
        default = getattr(cls(), k) if k != "layers" else None
        if k == "layers":
            if v is not None and not (isinstance(v, list) and all(isinstance(x, int) for x in v) and v):
                raise UserError(f"{where}: layers must be a non-empty list of integers, got {v!r}")
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise UserError(f"{where}: {k} must be true/false, got {v!r}")
        elif isinstance(default, (int, float)) and not isinstance(v, bool) and isinstance(v, (int, float)):
            v = type(default)(v) if not (isinstance(default, int) and isinstance(v, float)) else v
            if isinstance(default, int) and isinstance(v, float):
                raise UserError(f"{where}: {k} must be an integer, got {v!r}")
        elif isinstance(default, (int, float)):
            raise UserError(f"{where}: {k} must be a number, got {v!r}")
        out[k] = v
    return cls(**out)


def check_layers(struct: ModelStructure, layers: list[int], where: str = "layers") -> list[int]:
    bad = [x for x in layers if not 0 <= x < struct.num_layers]
    if bad or not layers:
        raise UserError(f"{where} {layers}: out of range; the model has layers 0..{struct.num_layers - 1}")
    return list(layers)
