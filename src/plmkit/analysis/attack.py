"""BERT-Attack (Li et al. 2020) on a fine-tuned sequence classifier, with MLM or word-embedding substitutes.

For one correctly classified example with words w_1..w_n (whitespace tokens) and gold label y:

1. *Importance*: I_i = P(y | x) - P(y | x with w_i replaced by the victim's mask token) (unknown
   token when it has none), one batch of n victim queries.
2. Words in decreasing importance are tried in turn (stop words and words without a letter skipped
   unless ``stop_words`` is empty); at most ``budget * n`` words (at least 1) may change.
3. *Substitutes* for w_i: the top-K of an MLM at w_i's position in the *unmasked* sentence (BERT-Attack);
   a word of several sub-word pieces gets the combinations of each piece's top candidates ranked by
   their summed log-probability (the paper's perplexity ranking), or the K nearest neighbours of w_i in
   a word-embedding space (``embeddings:FILE`` in word2vec format, e.g. ``plm word2vec train``'s output),
   kept when their cosine >= ``min_similarity``. The word itself and, with ``antonyms``, its listed
   antonyms are removed.
4. All substitutes are scored in one batch; if some flip the label, the one with the lowest P(y) is
   taken and the attack succeeds; otherwise the one lowering P(y) most is kept (when it lowers it) and
   the next word is tried.

Metrics over the N examples: ``original_accuracy``, ``after_attack_accuracy`` (correct and not flipped),
``success_rate`` (flipped / correctly classified), ``perturbed_fraction`` (mean share of words changed
in the successful examples), ``queries_per_example`` (mean victim queries per attacked example).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from plmkit.errors import UserError

STOP_WORDS = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves 's 're 've 'd 'll n't""".split())
"""Words never replaced by default (a short English function-word list; negations included on purpose:
changing them changes the meaning)."""


class Victim:
    """A ``plm finetune`` classification checkpoint that counts its queries."""

    def __init__(self, path: str, max_len: int | None = None, batch_size: int = 64) -> None:
        from plmkit.tasks.checkpoint import load_checkpoint

        self.model, self.obj, self.info, self.tok = load_checkpoint(path)
        if self.obj.kind != "classification":
            raise UserError(f"{path}: the victim has no classification head (task kind {self.obj.kind!r}); "
                            "BERT-Attack needs a sequence classifier (e.g. plm finetune --task sst2)")
        self.model.eval()
        self.max_len = max_len or int(self.info.get("max_seq_len", 128))
        self.batch_size = batch_size
        self.queries = 0
        mask = self.tok.special_tokens.get("mask") or self.tok.special_tokens.get("unk")
        self.mask_word = mask

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        from plmkit.tasks.inference import run_model, softmax

        self.queries += len(texts)
        feats = []
        for t in texts:
            ids = self.tok.encode(t)
            if len(ids) > self.max_len:
                ids = ids[: self.max_len - 1] + ids[-1:]
            feats.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
        return softmax(np.stack(run_model(self.model, self.obj, feats, self.batch_size)))


def read_examples(path: str, max_examples: int | None = None) -> list[tuple[str, int]]:
    """(text, label) rows of a GLUE-style TSV with ``sentence`` and ``label`` columns (SST-2 dev.tsv)."""
    from plmkit.textio import iter_lines

    p = Path(path)
    if p.is_dir():
        p = p / "dev.tsv"
    if not p.is_file():
        raise UserError(f"{p}: data file not found (expected a TSV with 'sentence' and 'label' columns)")
    rows: list[tuple[str, int]] = []
    header = None
    for n, line in enumerate(iter_lines(str(p)), 1):
        cols = line.rstrip("\n").split("\t")
        if header is None:
            header = cols
            if "sentence" not in header or "label" not in header:
                raise UserError(f"{p}:1: expected a header with 'sentence' and 'label' columns, got {header}")
            continue
        if not line.strip():
            continue
        try:
            rows.append((cols[header.index("sentence")].strip(), int(cols[header.index("label")])))
        except (IndexError, ValueError):
            raise UserError(f"{p}:{n}: expected a sentence and an integer label") from None
        if max_examples is not None and len(rows) >= max_examples:
            break
    return rows


class EmbeddingSubstitutes:
    """Nearest neighbours in a word-vector space (word2vec text or binary format)."""

    kind = "embeddings"

    def __init__(self, path: str, k: int = 20, min_similarity: float = 0.5) -> None:
        from plmkit.classic.word2vec import WordVectors

        if not Path(path).is_file():
            raise UserError(f"{path}: word-vector file not found")
        self.wv = WordVectors.load_word2vec_format(path)
        self.k, self.min_similarity = k, min_similarity
        self.lower = all(w == w.lower() for w in list(self.wv.words)[:2000])

    def check(self, words: Sequence[str]) -> None:
        keys = [w.lower() if self.lower else w for w in words if any(c.isalpha() for c in w)]
        known = sum(w in self.wv for w in keys)
        if keys and known < 0.5 * len(keys):
            raise UserError(f"the attacker's vocabulary covers only {known} of {len(keys)} words of the victim's "
                            "data; use word vectors trained on similar text")

    def prepare(self, words: Sequence[str]) -> None:
        pass

    def __call__(self, words: Sequence[str], i: int) -> list[str]:
        w = words[i].lower() if self.lower else words[i]
        if w not in self.wv:
            return []
        return [s for s, sim in self.wv.most_similar(w, topn=self.k) if sim >= self.min_similarity]


class MLMSubstitutes:
    """BERT-Attack's MLM candidates (top-K at the word's pieces in the unmasked sentence)."""

    kind = "mlm"

    def __init__(self, path: str, k: int = 20, tokenizer: str | None = None, pieces_top: int = 4) -> None:
        import plmkit
        from plmkit.knowledge.loading import load_tokenizer_for

        self.model = plmkit.load(path).eval()
        if getattr(self.model.config, "head", None) != "mlm":
            raise UserError(f"{path}: the attacker has no MLM head (config.head={getattr(self.model.config, 'head', None)!r}); "
                            "use an MLM checkpoint or embeddings:FILE")
        self.tok = load_tokenizer_for(path, tokenizer)
        self.k, self.pieces_top = k, pieces_top
        vocab = self.tok.get_vocab()
        specials = set(self.tok.all_special_ids)
        self.inv = {i: t for t, i in vocab.items()}
        self.whole = torch.tensor([i not in specials and not self.inv.get(i, "").startswith("##")
                                   and any(c.isalpha() for c in self.inv.get(i, "")) for i in range(len(self.tok))])
        self._cache: tuple[tuple[str, ...], Any, Any] | None = None

    def check(self, words: Sequence[str]) -> None:
        unk = self.tok.unk_token_id
        keys = [w for w in words if any(c.isalpha() for c in w)]
        bad = sum(1 for w in keys if unk is not None and set(self.tok.encode(w, add_special_tokens=False)) <= {unk})
        if keys and bad > 0.5 * len(keys):
            raise UserError(f"the attacker's tokenizer cannot encode {bad} of {len(keys)} words of the victim's data "
                            "(they become the unknown token); use an attacker with a matching vocabulary")

    @torch.no_grad()
    def prepare(self, words: Sequence[str]) -> None:
        from plmkit.analysis.features import align

        ids, owner = align(self.tok, words, 512)
        logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)
        self._cache = (tuple(words), owner, logp)

    def __call__(self, words: Sequence[str], i: int) -> list[str]:
        if self._cache is None or self._cache[0] != tuple(words):
            self.prepare(words)
        _, owner, logp = self._cache
        pos = [t for t, w in enumerate(owner) if w == i]
        if not pos:
            return []
        if len(pos) == 1:
            scores = logp[pos[0]].masked_fill(~self.whole, -float("inf"))
            top = scores.topk(self.k).indices.tolist()
            return [self.inv[t] for t in top]
        per = [logp[p].topk(self.pieces_top) for p in pos]
        combos = []
        for choice in itertools.product(range(self.pieces_top), repeat=len(pos)):
            if len(combos) > 4096:
                break
            toks = [per[j].indices[c].item() for j, c in enumerate(choice)]
            if not self.whole[toks[0]] or any(not self.inv[t].startswith("##") for t in toks[1:]):
                continue
            combos.append((sum(per[j].values[c].item() for j, c in enumerate(choice)),
                           self.inv[toks[0]] + "".join(self.inv[t][2:] for t in toks[1:])))
        combos.sort(key=lambda c: -c[0])
        return [w for _, w in combos[: self.k]]


def make_attacker(spec: str, k: int = 20, min_similarity: float = 0.5, tokenizer: str | None = None):
    """``embeddings:FILE`` -> EmbeddingSubstitutes, anything else -> MLMSubstitutes (a model path)."""
    if spec.startswith("embeddings:"):
        return EmbeddingSubstitutes(spec[len("embeddings:"):], k, min_similarity)
    return MLMSubstitutes(spec, k, tokenizer)


def attack_example(victim: Victim, words: list[str], label: int, substitutes: Callable, budget: float = 0.4,
                   stop_words: frozenset[str] = STOP_WORDS, antonyms: dict[str, set[str]] | None = None) -> dict:
    """One BERT-Attack run (module docstring). Returns a record for adversarial.jsonl."""
    q0 = victim.queries
    text = " ".join(words)
    p = victim.probs([text])[0]
    rec = {"original": text, "label": label, "original_prediction": int(p.argmax())}
    if int(p.argmax()) != label:
        return {**rec, "status": "skipped (misclassified)", "queries": victim.queries - q0}
    mask = victim.mask_word or ""
    masked = [" ".join(words[:i] + ([mask] if mask else []) + words[i + 1 :]) for i in range(len(words))]
    imp = p[label] - victim.probs(masked)[:, label]
    order = [i for i in np.argsort(-imp, kind="stable").tolist()
             if any(c.isalpha() for c in words[i]) and words[i].lower() not in stop_words]
    cur, changed, p_cur = list(words), [], float(p[label])
    limit = max(1, int(budget * len(words)))
    substitutes_prepared = False
    for i in order:
        if len(changed) >= limit:
            break
        if not substitutes_prepared:
            getattr(substitutes, "prepare", lambda w: None)(words)
            substitutes_prepared = True
        banned = {words[i].lower()} | (antonyms or {}).get(words[i].lower(), set())
        cands = [c for c in substitutes(words, i) if c.lower() not in banned]
        if not cands:
            continue
        probs = victim.probs([" ".join(cur[:i] + [c] + cur[i + 1 :]) for c in cands])
        flips = [j for j in range(len(cands)) if int(probs[j].argmax()) != label]
        if flips:
            j = min(flips, key=lambda j: probs[j][label])
            cur[i] = cands[j]
            changed.append(i)
            return {**rec, "status": "success", "adversarial": " ".join(cur), "changed": sorted(changed),
                    "perturbed_fraction": len(changed) / len(words), "adversarial_prediction": int(probs[j].argmax()),
                    "queries": victim.queries - q0}
        j = int(np.argmin(probs[:, label]))
        if probs[j][label] < p_cur:
            cur[i], p_cur = cands[j], float(probs[j][label])
            changed.append(i)
    return {**rec, "status": "failed", "adversarial": " ".join(cur), "changed": sorted(changed),
            "perturbed_fraction": len(changed) / len(words), "queries": victim.queries - q0}


def summarize(records: Sequence[dict]) -> dict:
    n = len(records)
    attacked = [r for r in records if r["status"] != "skipped (misclassified)"]
    success = [r for r in attacked if r["status"] == "success"]
    return {"n_examples": n, "n_attacked": len(attacked), "n_success": len(success),
            "original_accuracy": len(attacked) / n if n else 0.0,
            "after_attack_accuracy": (len(attacked) - len(success)) / n if n else 0.0,
            "success_rate": len(success) / len(attacked) if attacked else 0.0,
            "perturbed_fraction": float(np.mean([r["perturbed_fraction"] for r in success])) if success else 0.0,
            "queries_per_example": float(np.mean([r["queries"] for r in attacked])) if attacked else 0.0}


def read_antonyms(path: str) -> dict[str, set[str]]:
    """Antonym pairs, one ``word<TAB>antonym`` (or space-separated) pair per line, both directions."""
    from plmkit.textio import iter_lines

    out: dict[str, set[str]] = {}
    for n, line in enumerate(iter_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise UserError(f"{path}:{n}: expected two words (a word and its antonym), got {len(parts)}")
        a, b = (p.lower() for p in parts)
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return out


# ---------------------------------------------------------------------------- adversarial training
def victim_training_set(victim_path: str) -> tuple[Any, list[tuple[str, int]], list[str]]:
    """(the victim's FinetuneConfig, its training examples as (text, label index), label names): the exact
    subset ``plm finetune`` trained on, read again from ``task.json``'s options (same file, seed, size)."""
    import dataclasses
    import json

    from plmkit.tasks.config import FinetuneConfig
    from plmkit.tasks.data import task_spec
    from plmkit.tasks.finetuning import read_task_data

    info = json.loads((Path(victim_path) / "task.json").read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    opts = {k: v for k, v in info.get("config", {}).items() if k in known}
    if not opts:
        raise UserError(f"{victim_path}/task.json: no 'config' (the fine-tuning options); --defend needs a "
                        "checkpoint written by plm finetune")
    if isinstance(opts.get("exit_thresholds"), list):
        opts["exit_thresholds"] = tuple(opts["exit_thresholds"])
    cfg = FinetuneConfig(**opts)
    spec = task_spec(cfg)
    if spec.kind != "classification" or spec.text_pair_column is not None or cfg.text_pair_column is not None:
        raise UserError(f"{victim_path}: --defend needs a single-sentence classifier (task {spec.name!r} is "
                        f"{spec.kind}{' with sentence pairs' if spec.text_pair_column or cfg.text_pair_column else ''})")
    if not spec.header or cfg.no_header or isinstance(cfg.text_column, int) or isinstance(cfg.label_column, int):
        raise UserError(f"{victim_path}: --defend rewrites the training table with a header; the victim's data "
                        "has none (columns by index)")
    data = read_task_data(cfg, spec)
    return cfg, [(ex.text, data.labels.index(str(ex.label))) for ex in data.train], list(data.labels)


def write_augmented(path: Path, cfg: Any, train: Sequence[tuple[str, int]], adversarial: Sequence[tuple[str, int]],
                    labels: Sequence[str]) -> None:
    """The training table for adversarial training: every original row, then every adversarial example with
    its original (gold) label; one ``text<TAB>label`` header naming the columns the victim's task reads."""
    import os
    import tempfile

    text_col = cfg.text_column if isinstance(cfg.text_column, str) else "sentence"
    label_col = cfg.label_column if isinstance(cfg.label_column, str) else "label"
    clean = lambda t: " ".join(t.split())  # noqa: E731  (no tab or newline inside a cell)
    rows = [f"{text_col}\t{label_col}"] + [f"{clean(t)}\t{labels[y]}" for t, y in list(train) + list(adversarial)]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    os.replace(tmp, path)


def adversarial_training(victim_path: str, attacker: Callable, dev: Sequence[tuple[str, int]], out: Path,
                         before: dict, train_examples: int = 300, budget: float = 0.4,
                         stop_words: frozenset[str] = STOP_WORDS, antonyms: dict[str, set[str]] | None = None,
                         batch_size: int = 64, log: Callable[[str], None] = print) -> dict:
    """BERT-Attack's defence: attack the first ``train_examples`` of the victim's own training subset, add the
    successful adversarial examples (with their gold labels) to that subset, fine-tune from the same base with
    the victim's options (``task.json``), and attack ``dev`` again. ``before`` is the victim's dev attack summary.

    Writes ``out/adversarial_train.jsonl``, ``out/train_augmented.tsv``, the defended checkpoint ``out/defended/``,
    ``out/adversarial_defended.jsonl``, ``out/attack_defended.json``; returns the ``defend.json`` dict."""
    import dataclasses

    from plmkit.knowledge.report import write_json, write_jsonl
    from plmkit.tasks.finetuning import finetune

    cfg, train, labels = victim_training_set(victim_path)
    victim = Victim(victim_path, batch_size=batch_size)
    attacked = train[:train_examples]
    log(f"defend: attacking {len(attacked)} of the victim's {len(train)} training examples")
    recs = [attack_example(victim, t.split(), y, attacker, budget, stop_words, antonyms) for t, y in attacked]
    write_jsonl(out / "adversarial_train.jsonl", recs)
    adv = [(r["adversarial"], r["label"]) for r in recs if r["status"] == "success"]
    write_augmented(out / "train_augmented.tsv", cfg, train, adv, labels)
    from plmkit.tasks.data import task_spec
    from plmkit.tasks.specs import resolve_file

    dev_file = resolve_file(Path(cfg.data), cfg.dev_file or task_spec(cfg).dev_file, "dev").resolve()
    cfg2 = dataclasses.replace(cfg, data=str(out.resolve()), train_file="train_augmented.tsv",
                               dev_file=str(dev_file), max_train_examples=None, out=str(out / "defended"))
    log(f"defend: fine-tuning {cfg.model} on {len(train)} + {len(adv)} adversarial examples "
        f"({cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}, seed {cfg.seed})")
    res = finetune(cfg2)
    defended = Victim(str(out / "defended"), batch_size=batch_size)
    recs2 = [attack_example(defended, t.split(), y, attacker, budget, stop_words, antonyms) for t, y in dev]
    after = summarize(recs2)
    write_jsonl(out / "adversarial_defended.jsonl", recs2)
    write_json(out / "attack_defended.json", after)
    victim_eval = _read_eval(Path(victim_path))
    main = res.get("main_metric", "accuracy")
    clean_before = victim_eval.get(main) if victim_eval else None
    return {"train_examples_attacked": len(attacked), "train_attack": summarize(recs),
            "adversarial_examples_added": len(adv), "train_size": len(train), "augmented_train_size": len(train) + len(adv),
            "dev_examples": len(dev), "before": before, "after": after,
            "clean_metric": main, "clean_dev_before": clean_before, "clean_dev_after": res.get(main),
            "clean_cost": (clean_before - res[main]) if clean_before is not None and main in res else None,
            "clean_attacked_accuracy_cost": before["original_accuracy"] - after["original_accuracy"],
            "after_attack_accuracy_gain": after["after_attack_accuracy"] - before["after_attack_accuracy"],
            "success_rate_drop": before["success_rate"] - after["success_rate"],
            "defended_checkpoint": str(out / "defended"),
            "finetune": {k: getattr(cfg2, k) for k in ("model", "epochs", "lr", "batch_size", "max_seq_len", "seed")}}


def _read_eval(path: Path) -> dict | None:
    import json

    p = path / "eval.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
