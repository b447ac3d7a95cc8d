"""Attention analysis (Clark et al. 2019, "What does BERT look at?"): maps, a head view, per-head statistics.

Probabilities come from ``model(..., output_attentions=True).attentions`` (plmkit's explicit-softmax path:
SDPA does not return them), one ``(B, Nh, T, T)`` tensor per layer; layers are numbered 1..L here (layer l =
the attention of block l), heads 0..Nh-1.

**Per-head statistics over a corpus** (every non-padding token of every sentence is one query row; a mean is
the mean over all query rows of the corpus):

- ``cls``: attention to the special token at position 0 ([CLS] / BOS), ``sep``: to the special tokens after
  it ([SEP] / EOS); null when the tokenizer adds none;
- ``first``: to the token at position 0 whatever it is (a decoder's "attention sink"; = ``cls`` when that
  token is special);
- ``punct``: to the non-special tokens whose text is only punctuation (Unicode category P*);
- ``prev`` / ``next``: the weight on the token at position t-1 / t+1 (rows where it exists);
- ``entropy``: -sum_j p_j ln p_j (nats), and ``uniform_entropy``: ln(number of keys the row may attend to: T,
  or t+1 for a causal model), the entropy of uniform attention.

**Syntax-like heads** (CoNLL-2003 POS / chunk columns). Word-level attention as Clark et al. pool sub-words:
attention *to* a word is the sum over its pieces, attention *from* a word the mean over its pieces; special
tokens are no word. A chunk is a maximal run ``B-X I-X ...`` (an ``I-X`` after a tag of another type starts
a chunk). For each relation, an instance (word i, target word g) is predicted correctly by a head when g is
the word, other than i itself, that receives most attention from i:

- ``chunk_last``: every word of a multi-word chunk except its last word -> the chunk's last word (the head of
  an English NP / VP chunk is usually its last word);
- ``det_to_np_head``: every determiner (POS DT) inside a multi-word NP chunk, not last -> the NP's last word;
- ``chunk_last_to_first``: the last word of a multi-word chunk -> the chunk's first word.

Baseline (as Clark et al.): the best fixed relative offset (target = i + k, k in -3..3, k != 0). For a causal
model, instances whose target comes after the word (which it cannot attend to) are left out, so ``chunk_last``
and ``det_to_np_head`` have none.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any, Sequence

import numpy as np
import torch

from plmkit.errors import UserError

from .features import align

RELATIONS = ("chunk_last", "det_to_np_head", "chunk_last_to_first")
STATS = ("cls", "sep", "first", "punct", "prev", "next", "entropy", "uniform_entropy")


def check_supported(model: Any) -> None:
    """A plmkit Transformer whose forward takes ``output_attentions``."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    if "output_attentions" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise UserError(f"{type(model).__name__}: this model does not return attention probabilities "
                        "(no output_attentions); attention analysis needs a plmkit Transformer")


def _is_punct(text: str) -> bool:
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)


def encode(tok: Any, words: Sequence[str], max_len: int) -> dict:
    """Token ids, word owner per token, special / punctuation flags and token strings of one sentence."""
    ids, owner = align(tok, words, max_len)
    enc = tok.backend.encode(" ".join(words), add_special_tokens=tok.add_special_tokens_default)
    text = " ".join(words)
    special = [bool(s) for s in enc.special_tokens_mask][: len(ids)]
    punct = [not sp and _is_punct(text[s:e]) for (s, e), sp in zip(enc.offsets, special)]
    tokens = list(enc.tokens)[: len(ids)]
    return {"ids": ids, "owner": owner, "special": special, "punct": punct[: len(ids)], "tokens": tokens}


@torch.no_grad()
def iter_attentions(model: Any, tok: Any, sentences: Sequence[Sequence[str]], batch_size: int = 16,
                    max_len: int = 128):
    """Yield ``(sentence index, encoding, attention (L, Nh, T, T) float64 numpy)`` per sentence (no padding)."""
    check_supported(model)
    model.eval()
    dev = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    encs = [encode(tok, s, max_len) for s in sentences]
    order = sorted(range(len(sentences)), key=lambda i: len(encs[i]["ids"]))
    for b in range(0, len(order), batch_size):
        idx = [i for i in order[b : b + batch_size] if encs[i]["ids"]]
        if not idx:
            continue
        T = max(len(encs[i]["ids"]) for i in idx)
        ids = torch.full((len(idx), T), pad, dtype=torch.long)
        am = torch.zeros((len(idx), T), dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(encs[i]["ids"])
            ids[r, :n] = torch.tensor(encs[i]["ids"])
            am[r, :n] = 1
        out = model(ids.to(dev), attention_mask=am.to(dev), output_attentions=True)
        att = torch.stack([a.float() for a in out.attentions], 1).cpu().double()  # (B, L, Nh, T, T)
        for r, i in enumerate(idx):
            n = len(encs[i]["ids"])
            yield i, encs[i], att[r, :, :, :n, :n].numpy()


def head_statistics(model: Any, tok: Any, sentences: Sequence[Sequence[str]], batch_size: int = 16,
                    max_len: int = 128, syntax: Sequence[Sequence[Sequence[str]]] | None = None) -> dict:
    """Per-head statistics (module docstring) and, with ``syntax`` (CoNLL rows ``[word, pos, chunk, ner]`` of
    the same sentences), the syntax-relation accuracies. Returns the ``attention.json`` dict."""
    causal = bool(getattr(model.config, "causal", False))
    L, H = int(model.config.num_layers), int(model.config.num_heads)
    sums = {k: np.zeros((L, H)) for k in STATS}
    rows = {k: 0 for k in STATS}
    has_cls = has_sep = False
    rel_hits = {r: np.zeros((L, H)) for r in RELATIONS}
    rel_n = {r: 0 for r in RELATIONS}
    offsets = [k for k in range(-3, 4) if k]
    off_hits = {r: {k: 0 for k in offsets} for r in RELATIONS}
    n_tokens = 0
    for i, enc, att in iter_attentions(model, tok, sentences, batch_size, max_len):
        T = att.shape[-1]
        n_tokens += T
        special = np.array(enc["special"])
        cls_cols = [0] if special[0] else []
        sep_cols = [t for t in range(1, T) if special[t]]
        punct_cols = [t for t in range(T) if enc["punct"][t]]
        has_cls |= bool(cls_cols)
        has_sep |= bool(sep_cols)
        for name, cols in (("cls", cls_cols), ("sep", sep_cols), ("first", [0]), ("punct", punct_cols)):
            sums[name] += att[..., cols].sum(-1).sum(-1) if cols else 0.0
            rows[name] += T
        if T > 1:
            t = np.arange(1, T)
            sums["prev"] += att[..., t, t - 1].sum(-1)
            sums["next"] += att[..., t - 1, t].sum(-1)
            rows["prev"] += T - 1
            rows["next"] += T - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(att > 0, att * np.log(np.where(att > 0, att, 1.0)), 0.0)
        sums["entropy"] += -plogp.sum(-1).sum(-1)
        rows["entropy"] += T
        n_keys = np.arange(1, T + 1) if causal else np.full(T, T)
        sums["uniform_entropy"] += np.log(n_keys).sum()
        rows["uniform_entropy"] += T
        if syntax is not None:
            instances = relation_instances(syntax[i])
            if not any(instances.values()):
                continue
            W = word_attention(att, enc["owner"], len(syntax[i]))  # (L, H, n, n)
            n = W.shape[-1]
            present = ~np.isnan(W[0, 0]).all(-1)  # words with at least one token
            Wm = np.where(np.isnan(W), -np.inf, W)
            Wm[..., np.arange(n), np.arange(n)] = -np.inf  # the most-attended *other* word
            Wm[..., ~present] = -np.inf
            pred = Wm.argmax(-1)  # (L, H, n)
            for r, pairs in instances.items():
                for a, g in pairs:
                    if not (present[a] and present[g]) or (causal and g > a):
                        continue
                    rel_n[r] += 1
                    rel_hits[r] += pred[..., a] == g
                    for k in offsets:
                        off_hits[r][k] += int(a + k == g)
    if n_tokens == 0:
        raise UserError("no sentence produced any token: nothing to analyse")
    heads = []
    for layer in range(L):
        for h in range(H):
            row: dict[str, Any] = {"layer": layer + 1, "head": h}
            for k in STATS:
                row[k] = float(sums[k][layer, h] / rows[k]) if rows[k] else None
            if not has_cls:
                row["cls"] = None
            if not has_sep:
                row["sep"] = None
            heads.append(row)
    res: dict[str, Any] = {"num_layers": L, "num_heads": H, "n_sentences": len(sentences), "n_tokens": n_tokens,
                           "causal": causal, "heads": heads,
                           "per_layer": [{"layer": layer + 1, **{k: (float(np.mean([r[k] for r in heads if r["layer"] == layer + 1]))
                                                                  if heads[layer * H][k] is not None else None)
                                                               for k in STATS}} for layer in range(L)]}
    if syntax is not None:
        res["syntax"] = {}
        for r in RELATIONS:
            n = rel_n[r]
            acc = rel_hits[r] / n if n else np.zeros((L, H))
            best_k = max(offsets, key=lambda k: off_hits[r][k])
            top = sorted(((float(acc[a, b]), a + 1, b) for a in range(L) for b in range(H)), reverse=True)[:5]
            res["syntax"][r] = {"n": n, "accuracy": acc.round(6).tolist(),
                                "baseline": {"offset": best_k, "accuracy": off_hits[r][best_k] / n if n else 0.0},
                                "top_heads": [{"layer": la, "head": he, "accuracy": a} for a, la, he in top]}
    return res


def word_attention(att: np.ndarray, owner: Sequence[int | None], n_words: int) -> np.ndarray:
    """Word-to-word attention (..., n, n): TO a word = sum over its tokens, FROM a word = mean over its tokens;
    rows of words without tokens are NaN."""
    T = att.shape[-1]
    to = np.zeros((T, n_words))
    frm = np.zeros((n_words, T))
    for t, w in enumerate(owner):
        if w is not None:
            to[t, w] = 1.0
            frm[w, t] = 1.0
    cnt = frm.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frm = frm / cnt
    return frm @ att @ to


def chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of every chunk of a BIO tag sequence (an I-X after another type starts one)."""
    out: list[list] = []
    prev = "O"
    for i, t in enumerate(tags):
        if t == "O":
            prev = "O"
            continue
        kind = t[2:] if t[:2] in ("B-", "I-") else t
        if t.startswith("B-") or prev == "O" or prev[2:] != kind:
            out.append([kind, i, i])
        else:
            out[-1][2] = i
        prev = t
    return [tuple(c) for c in out]


def relation_instances(rows: Sequence[Sequence[str]]) -> dict[str, list[tuple[int, int]]]:
    """The (word, target word) pairs of every relation in one CoNLL sentence (module docstring)."""
    pos = [r[1] for r in rows]
    inst: dict[str, list[tuple[int, int]]] = {r: [] for r in RELATIONS}
    for kind, a, b in chunks([r[2] for r in rows]):
        if b == a:
            continue
        inst["chunk_last"] += [(i, b) for i in range(a, b)]
        inst["chunk_last_to_first"].append((b, a))
        if kind == "NP":
            inst["det_to_np_head"] += [(i, b) for i in range(a, b) if pos[i] == "DT"]
    return inst


# ---------------------------------------------------------------------------- output
def plot_maps(att: np.ndarray, tokens: Sequence[str], out_dir, title: str) -> list[str]:
    """One PNG per layer with every head (``layer{l}.png``) and one per head (``layer{l}_head{h}.png``)."""
    from pathlib import Path

    from plmkit.knowledge.report import pyplot, save_figure

    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L, H, T = att.shape[0], att.shape[1], att.shape[-1]
    written = []
    size = max(3.0, 0.22 * T + 1.5)
    for layer in range(L):
        cols = min(H, 4)
        rws = (H + cols - 1) // cols
        fig, axes = plt.subplots(rws, cols, figsize=(cols * 2.6, rws * 2.6), squeeze=False)
        for h in range(rws * cols):
            ax = axes[h // cols][h % cols]
            if h >= H:
                ax.axis("off")
                continue
            ax.imshow(att[layer, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"head {h}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{title}: layer {layer + 1}", fontsize=9)
        p = out / f"layer{layer + 1}.png"
        save_figure(fig, str(p))
        written.append(str(p))
        for h in range(H):
            fig, ax = plt.subplots(figsize=(size, size))
            ax.imshow(att[layer, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(T))
            ax.set_yticks(range(T))
            ax.set_xticklabels(tokens, rotation=90, fontsize=6)
            ax.set_yticklabels(tokens, fontsize=6)
            ax.set_xlabel("attended to (key)", fontsize=7)
            ax.set_ylabel("attending (query)", fontsize=7)
            ax.set_title(f"layer {layer + 1} head {h}", fontsize=8)
            p = out / f"layer{layer + 1}_head{h}.png"
            save_figure(fig, str(p))
            written.append(str(p))
    return written


_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Attention head view</title>
<style>
body{font-family:sans-serif;font-size:13px;margin:16px}
#ctl{margin-bottom:8px} .tok{font-family:monospace;font-size:12px;cursor:pointer}
.heads label{margin-right:6px;padding:1px 4px;border-radius:3px;color:#fff}
</style></head><body>
<h3>__TITLE__</h3>
<div id="ctl">Layer <select id="layer"></select> <span class="heads" id="heads"></span>
<span style="color:#666">(hover a token to see only its attention)</span></div>
<svg id="view" xmlns="http://www.w3.org/2000/svg"></svg>
<script>
const DATA = __DATA__;
const T = DATA.tokens.length, L = DATA.attention.length, H = DATA.attention[0].length;
const COLORS = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf",
                "#393b79","#637939","#8c6d31","#843c39","#7b4173","#3182bd"];
const ROW = 18, LEFT = 10, WIDTH = 140, GAP = 260;
const svg = document.getElementById("view");
svg.setAttribute("width", LEFT + 2 * WIDTH + GAP + 20); svg.setAttribute("height", T * ROW + 20);
const layerSel = document.getElementById("layer");
for (let l = 0; l < L; l++) { const o = document.createElement("option"); o.value = l; o.text = l + 1; layerSel.appendChild(o); }
const active = new Array(H).fill(true);
const headsDiv = document.getElementById("heads");
for (let h = 0; h < H; h++) {
  const lab = document.createElement("label"); lab.style.background = COLORS[h % COLORS.length];
  const cb = document.createElement("input"); cb.type = "checkbox"; cb.checked = true;
  cb.onchange = () => { active[h] = cb.checked; draw(null); };
  lab.appendChild(cb); lab.appendChild(document.createTextNode(h)); headsDiv.appendChild(lab);
}
layerSel.onchange = () => draw(null);
function el(name, attrs) { const e = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const k in attrs) e.setAttribute(k, attrs[k]); return e; }
function draw(focus) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const a = DATA.attention[+layerSel.value];
  const nOn = active.filter(x => x).length || 1;
  for (let h = 0; h < H; h++) {
    if (!active[h]) continue;
    for (let i = 0; i < T; i++) {
      if (focus !== null && focus !== i) continue;
      for (let j = 0; j < T; j++) {
        const w = a[h][i][j]; if (w < 0.01) continue;
        svg.appendChild(el("line", {x1: LEFT + WIDTH, y1: 14 + i * ROW - 4, x2: LEFT + WIDTH + GAP, y2: 14 + j * ROW - 4,
          stroke: COLORS[h % COLORS.length], "stroke-width": 2, "stroke-opacity": Math.min(1, w / Math.sqrt(nOn))}));
      }
    }
  }
  for (let i = 0; i < T; i++) {
    for (const side of [0, 1]) {
      const t = el("text", {x: side ? LEFT + WIDTH + GAP + 6 : LEFT + WIDTH - 6, y: 14 + i * ROW,
        "text-anchor": side ? "start" : "end", class: "tok"});
      t.textContent = DATA.tokens[i];
      if (!side) { t.onmouseenter = () => draw(i); t.onmouseleave = () => draw(null); }
      svg.appendChild(t);
    }
  }
}
draw(null);
</script></body></html>
"""


def head_view_html(att: np.ndarray, tokens: Sequence[str], path, title: str) -> None:
    """A self-contained HTML head view (inline JS / CSS, no network): layer selector, head toggles, lines from
    each attending token (left) to the tokens it attends to (right), opacity = weight."""
    from pathlib import Path

    data = {"tokens": list(tokens), "attention": np.round(att, 4).tolist()}
    html = _HTML.replace("__TITLE__", _escape(title)).replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(p)


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plot_statistics(res: dict, path: str, title: str) -> None:
    """Clark et al.'s figure: every head's mean attention to [CLS] / [SEP] / punctuation / previous / next token
    and its entropy, per layer (dots = heads, line = layer mean; dashed = uniform-attention entropy)."""
    from plmkit.knowledge.report import pyplot, save_figure

    plt = pyplot()
    keys = [k for k in ("cls", "sep", "punct", "prev", "next", "entropy") if res["heads"][0][k] is not None]
    if res["heads"][0]["cls"] is None:  # no special token at position 0: show the attention to the first token
        keys.insert(0, "first")
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.8), squeeze=False)
    layers = list(range(1, res["num_layers"] + 1))
    for ax, k in zip(axes[0], keys):
        xs = [r["layer"] for r in res["heads"]]
        ax.scatter(xs, [r[k] for r in res["heads"]], s=6, alpha=0.6)
        ax.plot(layers, [r[k] for r in res["per_layer"]], color="k", linewidth=1)
        if k == "entropy":
            ax.plot(layers, [r["uniform_entropy"] for r in res["per_layer"]], "--", color="gray", linewidth=1,
                    label="uniform")
            ax.legend(fontsize=6)
        ax.set_title({"first": "to the first token", "cls": "to [CLS]/BOS", "sep": "to [SEP]/EOS", "punct": "to punctuation", "prev": "to previous token",
                      "next": "to next token", "entropy": "entropy (nats)"}[k], fontsize=8)
        ax.set_xlabel("layer", fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9, y=1.04)
    save_figure(fig, path)


def plot_syntax(res: dict, path: str, title: str) -> None:
    """Heat maps (layer x head) of each relation's accuracy, with the best fixed-offset baseline in the title."""
    from plmkit.knowledge.report import pyplot, save_figure

    plt = pyplot()
    rels = [r for r in res["syntax"] if res["syntax"][r]["n"]]
    if not rels:
        return
    fig, axes = plt.subplots(1, len(rels), figsize=(3.4 * len(rels), 2.9), squeeze=False)
    for ax, r in zip(axes[0], rels):
        acc = np.array(res["syntax"][r]["accuracy"])
        im = ax.imshow(acc, vmin=0, vmax=1, cmap="magma", aspect="auto")
        b = res["syntax"][r]["baseline"]
        ax.set_title(f"{r} (n={res['syntax'][r]['n']})\nbaseline offset {b['offset']:+d}: {b['accuracy']:.2f}", fontsize=7)
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        ax.set_yticks(range(acc.shape[0]))
        ax.set_yticklabels(range(1, acc.shape[0] + 1), fontsize=6)
        ax.set_xticks(range(acc.shape[1]))
        ax.set_xticklabels(range(acc.shape[1]), fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9, y=1.06)
    save_figure(fig, path)
