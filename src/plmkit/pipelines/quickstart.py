"""``plm quickstart``: the whole pretraining lifecycle in a few minutes on a CPU.

What it does, offline, in one output directory:

1. reads a corpus (by default real English text that ships with Python itself: the reference
   documentation in ``pydoc_data.topics``; or ``--corpus``: a text file, a folder, JSONL or .gz) and
   holds out every 10th document;
2. trains a WordPiece tokenizer on the training part (HF ``tokenizers``);
3. tokenizes both parts into token stores (``plmkit.data.prepare``);
4. pretrains a small BERT-style encoder with masked-LM and a small GPT-style decoder with causal LM,
   each through the same :class:`plmkit.training.Trainer`, measuring held-out perplexity before and after;
5. shows fill-mask predictions and generated continuations from the trained models;
6. writes ``config.yaml`` (resolved), ``metrics.jsonl``, HF-format checkpoints, ``loss_curves.png`` and
   ``summary.json`` (``{"mlm": {"ppl_before", "ppl_after"}, "clm": {...}}``).

The directory is built under a temporary name beside ``--out`` and renamed into place only when
everything succeeded, so a failed or interrupted run never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from plmkit.errors import UserError


@dataclass(kw_only=True)
class QuickstartConfig:
    """Everything the quickstart run depends on (saved as ``config.yaml``)."""

    corpus: str | None = None
    """Text file, folder, JSONL or .gz; None = the English reference documentation shipped with Python."""
    text_field: str = "text"
    """JSONL field holding the text."""
    doc_sep: str = "blank"
    """How documents are separated in plain-text files: 'line' (one per line) or 'blank' (blank lines)."""
    encoding_errors: str = "strict"
    """Non-UTF-8 bytes in the corpus: 'strict' stops at the first (file:line, byte offset); 'replace' reads
    each as U+FFFD (counted)."""
    max_chars: int = 3_000_000
    """Read at most this many characters of the corpus (the rest is reported, not silently dropped)."""
    vocab_size: int = 4000
    seq_len: int = 128
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    mlm_steps: int = 1000
    clm_steps: int = 800
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 50
    eval_batches: int = 20
    seed: int = 1
    samples: int = 3
    """How many fill-mask and generation samples to show."""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- corpus

def builtin_corpus() -> tuple[str, list[str]]:
    """Real English prose that every Python installation carries: the language reference topics
    behind ``help()`` (``pydoc_data.topics``, ~460 kB). Falls back to the docstrings of the standard
    library's modules where a distribution strips pydoc_data."""
    try:
        from pydoc_data.topics import topics  # type: ignore[import-not-found]

        texts = [topics[k] for k in sorted(topics)]
        name = "Python reference documentation (pydoc_data.topics)"
    except ImportError:  # pragma: no cover - depends on the Python build
        import importlib
        import pkgutil

        texts = []
        for m in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
            if m.name.startswith("_") or m.name in {"antigravity", "this"}:
                continue
            try:
                mod = importlib.import_module(m.name)
            except Exception:
                continue
            if isinstance(mod.__doc__, str) and len(mod.__doc__) > 200:
                texts.append(mod.__doc__)
        name = "Python standard-library docstrings"
    docs: list[str] = []
    for text in texts:
        # Paragraphs become documents; drop reStructuredText underlines ("*****", "=====").
        for para in re.split(r"\n\s*\n", text):
            lines = [ln.strip() for ln in para.splitlines() if ln.strip() and not re.fullmatch(r"[*=\-~^]+", ln.strip())]
            if lines:
                docs.append(" ".join(lines))
    return name, docs


def read_corpus(cfg: QuickstartConfig, say: Callable[[str], None]) -> tuple[str, list[str], dict]:
    """Return (description, documents, stats) honouring ``max_chars``."""
    if cfg.corpus is None:
        name, docs = builtin_corpus()
        stats = {"source": name, "documents": len(docs)}
    else:
        from plmkit.data.corpus import CorpusConfig, CorpusStats, iter_documents

        path = Path(cfg.corpus)
        if not path.exists():
            raise UserError(f"--corpus {cfg.corpus}: no such file or directory")
        cstats = CorpusStats()
        docs = []
        chars = 0
        truncated = False
        for doc in iter_documents(path, CorpusConfig(doc_sep=cfg.doc_sep, text_field=cfg.text_field,
                                                    errors=cfg.encoding_errors), cstats):
            doc = " ".join(doc.split())
            if not doc:
                continue
            if chars + len(doc) > cfg.max_chars and docs:
                truncated = True
                break
            docs.append(doc)
            chars += len(doc)
        name = str(path)
        stats = {"source": name, "files": cstats.files, "empty_files": cstats.empty_files,
                 "documents_used": len(docs), "truncated_at_chars": cfg.max_chars if truncated else None}
        if truncated:
            say(f"note: using the first {chars:,} characters ({len(docs):,} documents) of {path}; "
                f"raise --max-chars to use more")
    docs = [d for d in docs if d.strip()]
    total = sum(len(d) for d in docs)
    if not docs or total < 2000:
        raise UserError(f"corpus {name}: only {total} characters of text; the quickstart needs at least 2,000")
    stats["characters"] = total
    return name, docs, stats


def split_documents(docs: list[str]) -> tuple[list[str], list[str]]:
    """Every 10th document is held out; with fewer than 10 documents, the last 10% of the text."""
    if len(docs) >= 10:
        train = [d for i, d in enumerate(docs) if i % 10 != 9]
        valid = [d for i, d in enumerate(docs) if i % 10 == 9]
        return train, valid
    text = " ".join(docs)
    cut = text.rfind(" ", 0, int(len(text) * 0.9))
    cut = cut if cut > 0 else int(len(text) * 0.9)
    return [text[:cut]], [text[cut:].strip()]


# --------------------------------------------------------------------------------------------- output dir

def _prepare_out(out: Path, overwrite: bool) -> Path:
    """Validate ``out`` and return the temporary directory the run is built in."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out}: directory is not empty (use --overwrite to replace it)")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {out}: {parent} is not writable")
    _remove_stale_partials(parent, out.name)
    tmp = parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _remove_stale_partials(parent: Path, name: str) -> None:
    """Remove ``.NAME.partial-PID`` directories left by killed runs (whose process no longer exists)."""
    for d in parent.glob(f".{name}.partial-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            alive = int(pid) != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def _write_lines(path: Path, docs: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(d.replace("\n", " ") + "\n")


# --------------------------------------------------------------------------------------------- samples

def fill_mask_samples(model, tok, docs: list[str], n: int, seed: int) -> list[dict]:
    """Mask one word in ``n`` held-out sentences and return the model's top-5 guesses."""
    import random

    import torch

    rng = random.Random(seed)
    out = []
    candidates = [d for d in docs if 6 <= len(d.split()) <= 40] or docs
    model.eval()
    for doc in rng.sample(candidates, min(n, len(candidates))):
        words = doc.split()[:40]
        # Mask an alphabetic word of 3+ letters (the interesting case), not the first one.
        choices = [i for i, w in enumerate(words[:12]) if i > 0 and w.isalpha() and len(w) >= 3] or [1]
        i = rng.choice(choices)
        answer = words[i]
        masked = " ".join(words[:i] + [tok.mask_token] + words[i + 1:])
        ids = tok.encode(masked)
        while len(ids) > model.config.max_position_embeddings and len(words) > i + 1:
            words = words[:-1]  # shorten from the end, keeping the masked word
            masked = " ".join(words[:i] + [tok.mask_token] + words[i + 1:])
            ids = tok.encode(masked)
        pos = ids.index(tok.mask_token_id)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, pos]
        top = torch.topk(torch.softmax(logits.float(), -1), 5)
        out.append({"text": masked, "answer": answer,
                    "predictions": [{"token": tok.convert_ids_to_tokens([int(t)])[0], "p": round(float(p), 4)}
                                    for p, t in zip(top.values, top.indices)]})
    return out


def generation_samples(model, tok, docs: list[str], n: int, seed: int, max_new_tokens: int = 40) -> list[dict]:
    """Continue the first words of ``n`` held-out documents with top-k sampling."""
    import random

    import torch

    rng = random.Random(seed)
    candidates = [d for d in docs if len(d.split()) >= 8] or docs
    out = []
    model.eval()
    for doc in rng.sample(candidates, min(n, len(candidates))):
        prompt = " ".join(doc.split()[:6])
        ids = tok.encode(prompt, add_special_tokens=False)
        torch.manual_seed(seed)
        room = model.config.max_position_embeddings - len(ids)
        gen = model.generate(torch.tensor([ids]), max_new_tokens=min(max_new_tokens, room), do_sample=True,
                             temperature=0.8, top_k=40)
        new = gen[0, len(ids):].tolist()
        out.append({"prompt": prompt, "continuation": tok.decode(new, skip_special_tokens=True)})
    return out


# --------------------------------------------------------------------------------------------- plot

def plot_losses(runs: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for ax, (name, run_dir) in zip(axes[0], runs.items()):
        with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
            train = [json.loads(line) for line in f]
        with open(run_dir / "eval.jsonl", encoding="utf-8") as f:
            held_out = [json.loads(line) for line in f]
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        esteps, elosses = [r["step"] for r in held_out], [r["loss"] for r in held_out]
        ax.plot(steps, losses, label="train loss")
        if esteps:
            ax.plot(esteps, elosses, "o-", label="held-out loss")
        ax.set_title(f"{name.upper()} pretraining")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- main

def run_quickstart(out: str | os.PathLike, cfg: QuickstartConfig | None = None, overwrite: bool = False,
                   progress: bool | None = None, say: Callable[[str], None] = print) -> dict:
    """Run the quickstart into ``out``; returns the summary (also ``out/summary.json``)."""
    import torch
    import yaml

    import plmkit
    from plmkit.data import TokenStore, prepare
    from plmkit.objectives import build
    from plmkit.config import TrainConfig
    from plmkit import progress as P
    from plmkit.errors import Interrupted
    from plmkit.training.trainer import Trainer

    cfg = cfg or QuickstartConfig()
    out = Path(out)
    t_start = time.time()
    name, docs, corpus_stats = read_corpus(cfg, say)  # before creating anything
    tmp = _prepare_out(out, overwrite)
    P.set_hint(f"nothing was kept ({out} is written only when the quickstart completes); run the command "
               f"again to start over")
    try:
        torch.manual_seed(cfg.seed)
        train_docs, valid_docs = split_documents(docs)
        say(f"corpus: {name}: {len(train_docs):,} training / {len(valid_docs):,} held-out documents, "
            f"{corpus_stats['characters']:,} characters")
        (tmp / "corpus").mkdir()
        _write_lines(tmp / "corpus" / "train.txt", train_docs)
        _write_lines(tmp / "corpus" / "valid.txt", valid_docs)

        say(f"[1/4] training a WordPiece tokenizer (vocab {cfg.vocab_size:,})")
        with P.Ticker("training the tokenizer"):
            tok = plmkit.train_tokenizer([str(tmp / "corpus" / "train.txt")], kind="wordpiece",
                                         vocab_size=cfg.vocab_size)
        tok.save(tmp / "tokenizer")
        P.stage("while preparing the data")
        prepare([tmp / "corpus" / "train.txt"], tok, tmp / "data" / "train", doc_sep="line", progress=progress)
        prepare([tmp / "corpus" / "valid.txt"], tok, tmp / "data" / "valid", doc_sep="line", progress=progress)
        train_store, valid_store = TokenStore(tmp / "data" / "train"), TokenStore(tmp / "data" / "valid")
        say(f"      {len(tok):,} tokens in the vocabulary; {train_store.num_tokens:,} training tokens, "
            f"{valid_store.num_tokens:,} held-out tokens")

        arch = dict(vocab_size=len(tok), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                    num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                    max_position_embeddings=2 * cfg.seq_len, pad_token_id=tok.pad_token_id)
        # (2x: the clm objective inserts a separator before each document boundary inside a packed window)
        plans = [
            ("mlm", "bert-tiny", dict(arch, mask_token_id=tok.mask_token_id), cfg.mlm_steps, cfg.seq_len - 2),
            ("clm", "gpt2-tiny", dict(arch, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id),
             cfg.clm_steps, cfg.seq_len),
        ]
        summary: dict[str, Any] = {"corpus": corpus_stats, "tokenizer": {"kind": "wordpiece", "vocab_size": len(tok)}}
        models = {}
        for k, (obj_name, preset, overrides, steps, window) in enumerate(plans, start=2):
            say(f"[{k}/4] pretraining a {preset.split('-')[0].upper()}-style model with {obj_name.upper()} "
                f"({steps} steps, {cfg.num_layers} layers x {cfg.hidden_size} hidden)")
            torch.manual_seed(cfg.seed)
            model = plmkit.load(preset, **overrides)
            obj = build(obj_name, tokenizer=tok)
            obj.prepare(model)
            train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                    warmup_steps=cfg.warmup_steps, schedule="cosine", min_lr_ratio=0.1,
                                    seed=cfg.seed, log_every=10, eval_every=max(steps // 4, 1),
                                    eval_batches=cfg.eval_batches, save_every=0, progress=progress,
                                    tensorboard=True, plots=False)
            run_dir = tmp / obj_name
            trainer = Trainer(model, obj, train_store.windows(window), train_cfg, out_dir=run_dir,
                              eval_data=valid_store.windows(window), tokenizer=tok)
            trainer.name = f"{obj_name.upper()} pretraining"
            P.stage(f"while evaluating before {trainer.name}")
            before = trainer.evaluate()
            t0 = time.time()
            fit = trainer.fit()
            if fit.get("interrupted"):  # Ctrl-C / SIGTERM: the trainer stopped after a step
                raise Interrupted(f"{fit.get('signal', 'a signal')} at step {fit['step']}/{steps} of "
                                  f"{trainer.name}; {P.hint()}")
            after = {"ppl": fit["eval_ppl"], "loss": fit["eval_loss"]}  # the trainer evaluates at the end
            with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
                last_logged = [json.loads(line) for line in f][-1]
            summary[obj_name] = {
                "model": preset, "parameters": sum(p.numel() for p in model.parameters()),
                "steps": steps, "train_seconds": round(time.time() - t0, 1),
                "ppl_before": round(float(before["ppl"]), 3), "ppl_after": round(float(after["ppl"]), 3),
                "loss_before": round(float(before["loss"]), 4), "loss_after": round(float(after["loss"]), 4),
                "final_train_loss": round(float(last_logged["loss"]), 4), "checkpoint": str(out / obj_name / "final"),
            }
            say(f"      held-out perplexity {summary[obj_name]['ppl_before']:.1f} -> {summary[obj_name]['ppl_after']:.1f}")
            models[obj_name] = model

        say("[4/4] samples")
        P.stage("while sampling")
        summary["fill_mask"] = fill_mask_samples(models["mlm"], tok, valid_docs, cfg.samples, cfg.seed)
        summary["generation"] = generation_samples(models["clm"], tok, valid_docs, cfg.samples, cfg.seed)
        for s in summary["fill_mask"]:
            guesses = ", ".join(f"{p['token']} ({p['p']:.2f})" for p in s["predictions"])
            say(f"  fill-mask: {s['text'][:100]}\n     answer: {s['answer']}   model: {guesses}")
        for s in summary["generation"]:
            say(f"  generate:  {s['prompt']} >>> {s['continuation'][:160]}")

        # One metrics.jsonl for the whole run (each record tagged with its model).
        with open(tmp / "metrics.jsonl", "w", encoding="utf-8") as f:
            for obj_name in ("mlm", "clm"):
                for split in ("metrics", "eval"):
                    with open(tmp / obj_name / f"{split}.jsonl", encoding="utf-8") as g:
                        for line in g:
                            rec = {"run": obj_name, "split": "train" if split == "metrics" else "held_out"}
                            f.write(json.dumps({**rec, **json.loads(line)}) + "\n")
        plot_losses({"mlm": tmp / "mlm", "clm": tmp / "clm"}, tmp / "loss_curves.png")
        resolved = asdict(cfg)
        resolved["corpus"] = cfg.corpus or corpus_stats["source"]
        with open(tmp / "config.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(resolved, f, sort_keys=False)
        summary["seconds"] = round(time.time() - t_start, 1)
        with open(tmp / "summary.json", "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        from plmkit.training.checkpoint import _exchange

        if out.exists() and _exchange(tmp, out):  # --overwrite: no moment without OUT (Linux)
            shutil.rmtree(tmp, ignore_errors=True)  # now the old run
        else:
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for obj_name in ("mlm", "clm"):
        summary[obj_name]["checkpoint"] = str(out / obj_name / "final")
    return summary


def print_locations(out: Path, summary: dict, say: Callable[[str], None] = print) -> None:
    say("")
    say(f"done in {summary['seconds']:.0f}s. Everything is in {out}/:")
    say("  summary.json         perplexities before/after, samples")
    say("  config.yaml          the resolved configuration")
    say("  metrics.jsonl        every logged step of both runs (also mlm/ and clm/, with TensorBoard events)")
    say("  loss_curves.png      training and held-out loss")
    say("  tokenizer/           the WordPiece tokenizer (tokenizer.json)")
    say("  mlm/final, clm/final HF-format checkpoints (config.json + model.safetensors + tokenizer)")
    say(f"try:  plm fill-mask {out}/mlm/final \"the {{mask}} statement is used for conditional execution\"".replace("{mask}", "[MASK]"))
    say(f"      plm generate {out}/clm/final \"The if statement\"")
