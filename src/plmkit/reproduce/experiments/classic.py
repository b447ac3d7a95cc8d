"""Claims about the classical language models (n-gram smoothing and order)."""

from __future__ import annotations

import math
from pathlib import Path

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


# ----------------------------------------------------------------------------- shared by the claims below
class _WordVocab:
    """A closed word vocabulary with the tokenizer attributes the ``clm`` / ``bilm`` objectives read.

    Id ``i`` is ``itos[i]``; ``<eos>`` ends every line (the neural LMs' sentence boundary, the event the
    n-grams call ``</s>``), ``<pad>`` pads batches, and words outside the vocabulary map to ``<unk>``."""

    kind = "word"

    def __init__(self, words):
        specials = [t for t in ("<eos>", "<pad>", "<unk>") if t not in words]
        self.itos = specials + sorted(set(words))
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.eos_token_id, self.pad_token_id, self.unk_token_id = (self.stoi[t] for t in ("<eos>", "<pad>", "<unk>"))
        self.bos_token_id = self.mask_token_id = self.cls_token_id = self.sep_token_id = None
        self.all_special_ids = [self.eos_token_id, self.pad_token_id]

    def __len__(self) -> int:
        return len(self.itos)

    def convert_ids_to_tokens(self, ids):
        return [self.itos[i] for i in ids]

    def stream(self, sentences) -> list[int]:
        """``<eos>`` then each sentence followed by ``<eos>``: every word and every line end is a predicted event."""
        unk, out = self.unk_token_id, [self.eos_token_id]
        for s in sentences:
            out += [self.stoi.get(t, unk) for t in s] + [self.eos_token_id]
        return out


def _windows(ids: list[int], T: int) -> list[list[int]]:
    """Consecutive (T + 1)-token windows overlapping by one token: together they predict ids[1:] once each."""
    w = [ids[i:i + T + 1] for i in range(0, len(ids) - 1, T)]
    return [x for x in w if len(x) > 1]


def _train(ctx: ClaimContext, name: str, model, objective, data: list, *, steps: int, batch_size: int, lr: float,
           weight_decay: float, seed: int, warmup: float = 0.05, clip: float = 0.5) -> dict:
    """``plmkit.training.Trainer`` over ``data`` for ``steps`` steps (AdamW, warm-up then cosine), run folder
    ``runs/NAME`` (its metrics.jsonl is the claim report's curve). Returns the summary and the CPU seconds."""
    import time

    from plmkit.config import TrainConfig
    from plmkit.training import Trainer

    out = ctx.run_dir(name)
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule="cosine",
                      warmup_steps=max(1, int(warmup * steps)), min_lr_ratio=0.05, clip_grad_norm=clip, seed=seed,
                      log_every=max(1, steps // 20), eval_every=0, save_every=0, keep_last=1, progress=False,
                      tensorboard=False, plots=False, num_threads=ctx.threads or 0)
    c0 = time.process_time()
    summary = Trainer(model, objective, data, cfg, out_dir=out).fit(resume=False)
    if summary.get("interrupted"):  # Ctrl-C / SIGTERM: no step result from a half-trained model
        raise KeyboardInterrupt(f"training run {name} interrupted at step {summary.get('step')}")
    import json

    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
              if line.strip()] if (out / "metrics.jsonl").is_file() else []
    losses = [r["loss"] for r in logged if isinstance(r.get("loss"), (int, float))]
    return {"cpu_seconds": round(time.process_time() - c0, 1), "steps": int(summary.get("step", steps)),
            "train_loss": round(losses[-1], 4) if losses else None, "run_dir": str(Path("runs") / name)}


def _read_lines(path: Path) -> list[list[str]]:
    from plmkit.classic.ngram import read_sentences

    return read_sentences(path)


# ----------------------------------------------------------------------------- neural LMs vs n-grams
@claim_runner
def neural_lm_vs_ngram(ctx: ClaimContext) -> Outcome:
    """Bengio's feed-forward LM and an LSTM LM against the best interpolated Kneser-Ney n-gram, word level.

    Same text, same vocabulary, same predicted events: the vocabulary is the training text's word types; a
    test word outside it becomes ``<unk>`` (a training type: WikiText's own ``<unk>``) before either model
    sees it. Each line is a sentence; the n-gram predicts its words and ``</s>`` from ``<s>`` padding, the
    neural LMs read the test text as one stream ``<eos> line <eos> line <eos> ...`` and predict every token
    after the first ``<eos>``: the same events, counted and checked equal. The n-gram order is chosen on a
    held-out tenth of the training lines (counted on the other nine tenths), then the model is recounted on
    all of them. The neural models train a fixed number of steps on all training lines (hyper-parameters
    from the budget; nothing is tuned on the test text), one run per seed."""
    from plmkit.classic.ngram import NgramCounts, build_model
    from plmkit.classic.recurrent import build
    from plmkit.objectives import build as build_objective
    from plmkit.training import evaluate_perplexity

    train = _read_lines(ctx.data(ctx.param("train")))
    test = _read_lines(ctx.data(ctx.param("test")))
    vocab = _WordVocab([t for s in train for t in s])
    known = set(vocab.stoi)
    test = [[t if t in known else "<unk>" for t in s] for s in test]
    oov = sum(1 for s in _read_lines(ctx.data(ctx.param("test"))) for t in s if t not in known)
    orders = [int(n) for n in ctx.param("orders", [2, 3, 4])]
    T, B = int(ctx.param("seq_len", 64)), int(ctx.param("batch_size", 16))
    steps = int(ctx.param("steps"))
    test_ids = vocab.stream(test)

    def ngram() -> dict:
        cut = int(len(train) * (1 - float(ctx.param("heldout", 0.1))))
        fit, dev = train[:cut], train[cut:]
        fit_known = {t for s in fit for t in s}
        dev = [[t if t in fit_known else "<unk>" for t in s] for s in dev]
        dev_ppl = {n: build_model(NgramCounts.build(fit, n), "kn").perplexity(dev) for n in orders}
        best = min(orders, key=lambda n: dev_ppl[n])
        test_ppl, events = {}, None
        for n in orders:
            lm = build_model(NgramCounts.build(train, n), "kn")
            total, events, _ = lm.score_sentences(test)
            test_ppl[n] = math.exp(-total / events)
        return {"order": best, "ppl": _ppl(test_ppl[best]), "events": events,
                "dev_ppl": {str(n): _ppl(v) for n, v in dev_ppl.items()},
                "test_ppl": {str(n): _ppl(v) for n, v in test_ppl.items()}}

    kn = ctx.step("kn-ngram", ngram)
    if kn["events"] != len(test_ids) - 1:  # the comparison is meaningless unless both predict the same events
        raise RuntimeError(f"event counts differ: n-gram {kn['events']}, neural {len(test_ids) - 1}")

    arms = {
        "ffnn": dict(family="ffnn-small", lr=float(ctx.param("ffnn_lr", 2e-3)),
                     config=dict(ctx.param("ffnn", {"context_size": 5, "embedding_size": 200, "hidden_size": 500,
                                                     "dropout": 0.4, "tie_word_embeddings": True}))),
        "lstm": dict(family="lstm-small", lr=float(ctx.param("lstm_lr", 3e-3)),
                     config=dict(ctx.param("lstm", {"embedding_size": 256, "hidden_size": 256, "num_layers": 2,
                                                     "dropout": 0.3, "tie_word_embeddings": True}))),
    }
    objective = build_objective("clm", tokenizer=vocab, separator=False)
    train_windows = _windows(vocab.stream(train), T)

    def neural(arm: str, seed: int) -> dict:
        import torch

        spec = arms[arm]
        torch.manual_seed(seed)
        model = build(spec["family"], vocab_size=len(vocab), **spec["config"])
        objective.prepare(model)
        r = _train(ctx, f"{arm}-seed{seed}", model, objective, train_windows, steps=steps, batch_size=B,
                   lr=spec["lr"], weight_decay=float(ctx.param("weight_decay", 0.1)), seed=seed)
        ppl = evaluate_perplexity(model, objective, _windows(test_ids, T), batch_size=32)
        return {**r, "ppl": _ppl(ppl), "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}

    res: dict[str, list[dict]] = {arm: [] for arm in arms}
    for s in ctx.seeds:  # seed by seed: an interrupted run has both arms of its first seeds
        for arm in arms:
            res[arm].append(ctx.step(f"{arm}-seed{s}", lambda a=arm, s=s: neural(a, s)))
    ppls = {arm: [r["ppl"] for r in rs] for arm, rs in res.items()}
    z = float(ctx.param("z", 2.0))
    parts = {f"{name} beats {kn['order']}-gram KN": stats.paired(
        ppls[arm], [kn["ppl"]] * len(ctx.seeds), higher_is_better=False, z=z,
        what=f"test perplexity, {name} vs the {kn['order']}-gram KN, by seed")
        for arm, name in (("ffnn", "FFNN"), ("lstm", "LSTM"))}
    ours = {f"{kn['order']}-gram KN ppl": kn["ppl"], "FFNN ppl": stats.summary(ppls["ffnn"]),
            "LSTM ppl": stats.summary(ppls["lstm"])}
    rows = [[f"{n}-gram KN", v, kn["dev_ppl"][n], None, None] for n, v in kn["test_ppl"].items()]
    rows += [[arm.upper(), r["ppl"], None, s, r["cpu_seconds"]] for arm, rs in res.items()
             for s, r in zip(ctx.seeds, rs)]
    table = {"columns": ["model", "test ppl", "held-out ppl (order choice)", "seed", "train CPU s"], "rows": rows}
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table,
                   runs=[r["run_dir"] for rs in res.values() for r in rs],
                   details={"vocab": len(vocab), "train_lines": len(train), "test_lines": len(test),
                            "test_events": kn["events"], "test_oov_tokens": oov, "kn_order_chosen": kn["order"],
                            "steps": steps, "seq_len": T, "batch_size": B,
                            "params": {arm: rs[0]["params"] for arm, rs in res.items()}})


# ----------------------------------------------------------------------------- word2vec architectures
_SYNTACTIC = ("plural", "past-tense", "comparative")  # the built-in set's syntactic sections


def _is_semantic(section: str) -> bool:
    """Google's questions-words.txt names its syntactic sections ``gram*``; the built-in set lists its own."""
    return not section.startswith("gram") and section not in _SYNTACTIC


def _corpus(ctx: ClaimContext, files: list[str], lowercase: bool, max_words: int | None) -> list[list[str]]:
    """Sentences of the corpus files: ``.txt`` files of one tokenised sentence per line (WikiText: heading lines
    ``= ... =`` dropped) or, for raw books (``tokenize: regex``), words and punctuation split by ``\\w+|[^\\w\\s]``."""
    import re

    regex = ctx.param("tokenize", "whitespace") == "regex"
    out, n = [], 0
    for rel in files:
        for line in ctx.data(rel).read_text(encoding="utf-8", errors="replace").splitlines():
            if lowercase:
                line = line.lower()
            toks = re.findall(r"\w+|[^\w\s]", line) if regex else line.split()
            if not toks or toks[0] == "=":
                continue
            out.append(toks)
            n += len(toks)
            if max_words and n >= max_words:
                return out
    return out


@claim_runner
def word2vec_architectures(ctx: ClaimContext) -> Outcome:
    """Skip-gram vs CBOW and negative sampling vs hierarchical softmax on word analogies (3CosAdd).

    Every arm trains ``plmkit.classic.word2vec`` on the same sentences with the same dimensions, window,
    epochs, sub-sampling and min count (each architecture at word2vec.c's default learning rate), once per
    seed; all arms are scored on the same questions (those whose four words are in the shared vocabulary)."""
    import time

    from plmkit.classic.word2vec import Word2VecConfig, analogy_questions, read_questions, train_word2vec

    sents = _corpus(ctx, list(ctx.param("corpus")), bool(ctx.param("lowercase", True)), ctx.param("max_words", None))
    qfile = ctx.param("questions", None)
    questions = read_questions(ctx.data(qfile)) if qfile else analogy_questions()
    base = {k: ctx.param(k, d) for k, d in (("vector_size", 100), ("window", 5), ("epochs", 3), ("min_count", 5),
                                             ("negative", 5), ("sample", 1e-3), ("batch_size", 1024))}
    arms = [(a, loss) for a in ("skipgram", "cbow") for loss in ("ns", "hs")]

    def one(arch: str, loss: str, seed: int) -> dict:
        c0 = time.process_time()
        wv = train_word2vec(sents, Word2VecConfig(architecture=arch, loss=loss, seed=seed, workers=ctx.threads or 1,
                                                  **base))
        cpu = time.process_time() - c0
        ev = wv.evaluate_analogies(questions)
        secs = ev["sections"]

        def acc(pick) -> float | None:
            n = sum(v["n"] for k, v in secs.items() if pick(k))
            return sum(v["accuracy"] * v["n"] for k, v in secs.items() if pick(k)) / n if n else None

        return {"total": ev["accuracy"], "semantic": acc(_is_semantic), "syntactic": acc(lambda k: not _is_semantic(k)),
                "evaluated": ev["evaluated"], "skipped": ev["skipped"], "sections": secs,
                "vocab": wv.train_stats["vocab_size"], "cpu_seconds": round(cpu, 1)}

    res: dict[str, list[dict]] = {f"{a}-{loss}": [] for a, loss in arms}
    for s in ctx.seeds:  # seed by seed: an interrupted run has every arm of its first seeds
        for a, loss in arms:
            res[f"{a}-{loss}"].append(ctx.step(f"{a}-{loss}-seed{s}", lambda a=a, loss=loss, s=s: one(a, loss, s)))
    fig = lambda arm, key: [r[key] if r[key] is not None else 0.0 for r in res[arm]]  # noqa: E731
    z = float(ctx.param("z", 2.0))
    parts = {}
    for loss in ("ns", "hs"):
        parts[f"skip-gram beats CBOW on semantic analogies ({loss.upper()})"] = stats.paired(
            fig(f"skipgram-{loss}", "semantic"), fig(f"cbow-{loss}", "semantic"), z=z,
            what=f"semantic analogy accuracy, skip-gram vs CBOW with {loss.upper()}, by seed")
    parts["negative sampling beats hierarchical softmax (skip-gram, all analogies)"] = stats.paired(
        fig("skipgram-ns", "total"), fig("skipgram-hs", "total"), z=z,
        what="analogy accuracy, skip-gram NS vs HS, by seed")
    ours = {f"{arm} {key}": stats.summary(fig(arm, key)) for arm in res for key in ("semantic", "syntactic", "total")}
    table = {"columns": ["arm", "seed", "semantic", "syntactic", "total", "questions", "train CPU s"],
             "rows": [[arm, s, r["semantic"], r["syntactic"], r["total"], r["evaluated"], r["cpu_seconds"]]
                      for arm, rs in res.items() for s, r in zip(ctx.seeds, rs)]}
    first = res["skipgram-ns"][0]
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table,
                   details={"sentences": len(sents), "words": sum(map(len, sents)), "vocab": first["vocab"],
                            "questions": len(questions), "evaluated": first["evaluated"],
                            "skipped_unknown": first["skipped"], "config": base,
                            "questions_source": qfile or "plmkit.classic.word2vec.ANALOGY_PAIRS (built-in)"})


# ----------------------------------------------------------------------------- ELMo vs word2vec features
def _entity_f1(gold, pred, outside: int) -> float:
    """Micro F1 over the tokens whose gold or predicted tag is an entity tag (not ``O``)."""
    tp = float(((pred == gold) & (gold != outside)).sum())
    n_pred, n_gold = float((pred != outside).sum()), float((gold != outside).sum())
    if tp == 0:
        return 0.0
    p, r = tp / n_pred, tp / n_gold
    return 2 * p * r / (p + r)


def _elmo_features(model, vocab: _WordVocab, sents: list[list[str]], batch_size: int = 32):
    """Per word of ``sents``: the mean of ELMo's L + 1 layer representations, and layer 0 (the char-CNN),
    each (N, 2P). Each sentence is read as ``<eos> words <eos>``, as lines were in training."""
    import numpy as np
    import torch

    mixed, layer0 = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(sents), batch_size):
            chunk = sents[i:i + batch_size]
            rows = [[vocab.eos_token_id] + [vocab.stoi.get(w, vocab.unk_token_id) for w in s] + [vocab.eos_token_id]
                    for s in chunk]
            T = max(map(len, rows))
            ids = torch.full((len(rows), T), vocab.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), T), dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, :len(r)], mask[j, :len(r)] = torch.tensor(r), 1
            layers = model.layer_representations(ids, mask)
            mean = torch.stack(layers).mean(0)
            for j, s in enumerate(chunk):
                mixed.append(mean[j, 1:1 + len(s)].numpy())
                layer0.append(layers[0][j, 1:1 + len(s)].numpy())
    return np.concatenate(mixed), np.concatenate(layer0)


@claim_runner
def elmo_vs_word2vec(ctx: ClaimContext) -> Outcome:
    """Frozen ELMo features (the mean of its char-CNN and biLSTM layers) against static word2vec vectors of the
    same width, both trained on the same unlabelled text, as the input of the same linear probe (plmkit's
    ``analysis.probes.train_probe``: standardised features, L2 logistic regression) for CoNLL-2003 NER tags,
    scored by entity-token F1 on held-out sentences; one ELMo, one word2vec and one probe each per seed.

    The text is the words of the probe's training file (labels unused). ELMo trains with the ``bilm`` objective
    for ``elmo_steps`` steps; word2vec (skip-gram, negative sampling, min count 1) for ``w2v_epochs`` epochs
    (it is far cheaper: both CPU times are reported). ``vocab_min_count`` shrinks the biLM's softmax (the
    bulk of its cost). A probe word outside the text gets a zero word2vec
    vector; ELMo spells it with its char-CNN (``extend_vocabulary``), part of what ELMo is."""
    from collections import Counter

    import numpy as np
    import torch

    from plmkit.analysis.probes import read_conll, train_probe
    from plmkit.classic.recurrent import build
    from plmkit.classic.word2vec import Word2VecConfig, train_word2vec
    from plmkit.objectives import build as build_objective

    train_rows = read_conll(str(ctx.data(ctx.param("task_train"))))
    test_rows = read_conll(str(ctx.data(ctx.param("task_test"))), max_sentences=ctx.param("probe_test_sentences", None))
    corpus = [[r[0] for r in s] for s in train_rows]
    n_probe = ctx.param("probe_train_sentences", None)
    probe_train = train_rows[:n_probe] if n_probe else train_rows
    tags = sorted({r[3] for s in train_rows for r in s})
    tag_id = {t: i for i, t in enumerate(tags)}
    y_train = np.array([tag_id[r[3]] for s in probe_train for r in s])
    y_test = np.array([tag_id.get(r[3], tag_id["O"]) for s in test_rows for r in s])
    words_train = [[r[0] for r in s] for s in probe_train]
    words_test = [[r[0] for r in s] for s in test_rows]
    width = int(ctx.param("hidden_size", 256))
    T, B = int(ctx.param("seq_len", 64)), int(ctx.param("batch_size", 16))
    l2, iters = float(ctx.param("probe_l2", 1e-3)), int(ctx.param("probe_iters", 100))
    outside = tag_id["O"]

    def probe(x_train, x_test, seed: int) -> dict:
        p = train_probe(x_train.astype(np.float32), y_train, len(tags), l2=l2, max_iter=iters, seed=seed)
        with torch.no_grad():
            pred = p.logits(x_test.astype(np.float32)).argmax(-1).numpy()
        return {"f1": _entity_f1(y_test, pred, outside), "accuracy": float((pred == y_test).mean())}

    def one(seed: int) -> dict:
        import time

        # the biLM's vocabulary: words seen min_count times (rarer ones are <unk> in training; every probe word
        # joins it afterwards, spelled by the char-CNN, so no feature is looked up as <unk>)
        counts = Counter(w for s in corpus for w in s)
        vocab = _WordVocab([w for w, c in counts.items() if c >= int(ctx.param("vocab_min_count", 1))])
        # ELMo: the biLM over the text, then every probe word joins the vocabulary (spelled by the char-CNN)
        torch.manual_seed(seed)
        model = build(ctx.param("elmo_preset", "elmo-small"), vocab_size=len(vocab), hidden_size=width,
                      **dict(ctx.param("elmo", {"lstm_size": width, "dropout": 0.3})))
        model.set_vocabulary(vocab.itos)
        objective = build_objective("bilm", tokenizer=vocab)
        objective.prepare(model)
        elmo = _train(ctx, f"elmo-seed{seed}", model, objective, _windows(vocab.stream(corpus), T),
                      steps=int(ctx.param("elmo_steps")), batch_size=B, lr=float(ctx.param("elmo_lr", 2e-3)),
                      weight_decay=0.1, seed=seed)
        new = sorted({w for s in words_train + words_test for w in s} - set(vocab.stoi))
        model.extend_vocabulary(new)
        vocab.itos += new
        vocab.stoi.update({w: len(vocab.stoi) + i for i, w in enumerate(new)})
        c0 = time.process_time()
        e_train, e0_train = _elmo_features(model, vocab, words_train)
        e_test, e0_test = _elmo_features(model, vocab, words_test)
        feat_cpu = time.process_time() - c0
        # word2vec: the same text, the same width
        c0 = time.process_time()
        wv = train_word2vec(corpus, Word2VecConfig(architecture="skipgram", loss="ns", vector_size=width,
                                                   min_count=int(ctx.param("w2v_min_count", 1)), epochs=int(ctx.param("w2v_epochs", 5)), seed=seed,
                                                   workers=ctx.threads or 1))
        w2v_cpu = time.process_time() - c0

        def static(sents):
            zero = np.zeros(width, dtype=np.float32)
            return np.stack([wv[w] if w in wv else zero for s in sents for w in s])

        test_oov = sum(1 for s in words_test for w in s if w not in wv)
        return {"elmo": probe(e_train, e_test, seed), "elmo_layer0": probe(e0_train, e0_test, seed),
                "word2vec": probe(static(words_train), static(words_test), seed),
                "elmo_train_cpu_seconds": elmo["cpu_seconds"], "elmo_feature_cpu_seconds": round(feat_cpu, 1),
                "w2v_train_cpu_seconds": round(w2v_cpu, 1), "elmo_steps": elmo["steps"],
                "elmo_train_loss": elmo["train_loss"], "run_dir": elmo["run_dir"],
                "test_words": int(len(y_test)), "test_oov_words_w2v": test_oov}

    res = [ctx.step(f"seed{s}", lambda s=s: one(s)) for s in ctx.seeds]
    f1 = {arm: [r[arm]["f1"] for r in res] for arm in ("elmo", "elmo_layer0", "word2vec")}
    verdict = stats.paired(f1["elmo"], f1["word2vec"], z=float(ctx.param("z", 2.0)),
                           what="NER entity-token F1 of the linear probe, ELMo vs word2vec features, by seed")
    ours = {f"{arm} entity-token F1": stats.summary(v) for arm, v in f1.items()}
    ours |= {f"{arm} token accuracy": stats.summary([r[arm]["accuracy"] for r in res])
             for arm in ("elmo", "elmo_layer0", "word2vec")}
    rows = [[arm, s, r[arm]["f1"], r[arm]["accuracy"]] for s, r in zip(ctx.seeds, res)
            for arm in ("elmo", "elmo_layer0", "word2vec")]
    table = {"columns": ["features", "seed", "entity-token F1", "token accuracy"], "rows": rows}
    first = res[0]
    return Outcome(ours=ours, verdict=verdict, table=table, runs=[r["run_dir"] for r in res],
                   details={"text_sentences": len(corpus), "text_words": sum(map(len, corpus)),
                            "probe_train_words": int(len(y_train)), "probe_test_words": first["test_words"],
                            "test_oov_words_w2v": first["test_oov_words_w2v"], "tags": tags, "width": width,
                            "cpu_seconds": {k: [r[k] for r in res] for k in ("elmo_train_cpu_seconds",
                                            "elmo_feature_cpu_seconds", "w2v_train_cpu_seconds")}})
