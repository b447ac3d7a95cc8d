"""``plm quickstart`` end to end on a small config, and its bad-input handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plmkit.pipelines.quickstart import QuickstartConfig, builtin_corpus, run_quickstart, split_documents


def _plm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "plmkit", "quickstart", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_builtin_corpus_is_real_english_text():
    name, docs = builtin_corpus()
    text = " ".join(docs)
    assert len(text) > 100_000
    words = text.lower().split()
    # Real prose: the commonest English function words are frequent.
    for w in ("the", "of", "is", "a"):
        assert words.count(w) > 500, w


def test_split_holds_out_every_tenth_document():
    docs = [f"doc {i}" for i in range(25)]
    train, valid = split_documents(docs)
    assert valid == ["doc 9", "doc 19"] and len(train) == 23


def test_quickstart_small_end_to_end(tmp_path):
    out = tmp_path / "qs"
    cfg = QuickstartConfig(vocab_size=600, seq_len=32, hidden_size=32, num_layers=1, num_heads=2,
                           intermediate_size=64, mlm_steps=40, clm_steps=40, batch_size=8, lr=3e-3,
                           warmup_steps=5, eval_batches=4, max_chars=200_000, samples=2)
    summary = run_quickstart(out, cfg, progress=False, say=lambda s: None)
    on_disk = json.loads((out / "summary.json").read_text())
    for name in ("mlm", "clm"):
        s = on_disk[name]
        assert s["ppl_after"] < s["ppl_before"], (name, s)
        assert (out / name / "final" / "config.json").is_file()
        assert (out / name / "final" / "model.safetensors").is_file()
        assert (out / name / "final" / "tokenizer.json").is_file()
    assert summary["mlm"]["ppl_after"] == on_disk["mlm"]["ppl_after"]
    assert (out / "loss_curves.png").stat().st_size > 1000
    assert (out / "config.yaml").is_file()
    runs = {json.loads(line)["run"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert runs == {"mlm", "clm"}
    assert len(on_disk["fill_mask"]) == 2 and len(on_disk["generation"]) == 2
    assert not list(tmp_path.glob(".qs.partial-*"))
    # The checkpoints load back through the public API.
    import plmkit

    model = plmkit.load(str(out / "clm" / "final"))
    assert model.config.vocab_size == summary["tokenizer"]["vocab_size"]


@pytest.mark.parametrize("case", ["missing", "empty", "binary", "non_utf8", "not_empty_out"])
def test_bad_input_one_line_exit_2(tmp_path, case):
    out = tmp_path / "out"
    corpus = tmp_path / "corpus.txt"
    if case == "missing":
        corpus = tmp_path / "nope.txt"
    elif case == "empty":
        corpus.write_text("")
    elif case == "binary":
        corpus.write_bytes(bytes(range(256)) * 40)
    elif case == "non_utf8":
        corpus.write_bytes(("good text " * 500).encode() + b"\xff\xfe bad" + ("more " * 500).encode())
    else:
        corpus.write_text("hello world " * 1000)
        out.mkdir()
        (out / "keep.txt").write_text("precious")
    r = _plm("--out", out, "--corpus", corpus, "--no-progress")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("plm quickstart: error:"), r.stderr
    assert "Traceback" not in r.stderr
    if case == "not_empty_out":
        assert (out / "keep.txt").read_text() == "precious"
        assert "--overwrite" in lines[0]
    else:
        assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))
