"""plm finetune --verbalizer: the LM / MLM head's label-word log-probabilities as class scores, with soft
prompts; --prompt-init; reload for plm evaluate / predict / generate."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.prompting.soft import PromptTuning, build_soft_prompt
from plmkit.prompting.verbalizer import VerbalizerObjective, load_verbalizer
from plmkit.tasks.modes import ModeConfig, apply_mode, count_parameters
from plmkit.tasks.readers import TextExample


@pytest.fixture(scope="module")
def vb(workdir, tmp_path_factory):
    """The toy sentiment data's WordPiece tokenizer with a tiny BERT + MLM head and a tiny llama, and patterns."""
    d = tmp_path_factory.mktemp("verb")
    tok = plmkit.load_tokenizer(workdir / "model")
    torch.manual_seed(0)
    for name, preset in (("mlm", "bert-tiny"), ("causal", "llama-tiny")):
        m = plmkit.load(preset, vocab_size=len(tok), max_position_embeddings=128)
        m.save_pretrained(d / name)
        tok.save(d / name)
    (d / "mlm.yaml").write_text('template: "{text} the movie was {mask} ."\nverbalizer: {"0": " bad", "1": " good"}\n')
    (d / "causal.yaml").write_text('template: "{text} the story was"\nverbalizer: {"0": " bad", "1": " good"}\n')
    return SimpleNamespace(dir=d, tok=tok, data=workdir)


def _obj(vb, kind):
    t = load_verbalizer(vb.dir / f"{kind}.yaml", ["0", "1"], pair=False)
    return VerbalizerObjective(t, vb.tok, ["0", "1"], masked=kind == "mlm")


EXAMPLES = [TextExample("the film was good fun", None, "1", "x:1"), TextExample("dull", None, "0", "x:2"),
            TextExample("a boring and poor plot", None, "0", "x:3")]


@pytest.mark.parametrize("kind", ["mlm", "causal"])
def test_verbalizer_scores_equal_a_hand_computation(vb, kind):
    model = plmkit.load(vb.dir / kind).eval()
    obj = _obj(vb, kind)
    obj.prepare(model)
    tok = vb.tok
    feats = obj.encode_examples(tok, EXAMPLES, ["0", "1"], 64)
    good, bad = (tok.encode(w, add_special_tokens=False) for w in (" good", " bad"))
    assert obj.label_token_ids == [bad[0], good[0]]
    for e, f in zip(EXAMPLES, feats):
        text = tok.encode(e.text, add_special_tokens=False)
        pattern = tok.encode("the movie was" if kind == "mlm" else "the story was", add_special_tokens=False)
        if kind == "mlm":
            want = [tok.cls_token_id] + text + pattern + [tok.mask_token_id] + tok.encode(".", add_special_tokens=False) \
                + [tok.sep_token_id]
            assert f["answer_position"] == 1 + len(text) + len(pattern)
        else:
            want = text + pattern
            assert f["answer_position"] == len(want) - 1
        assert f["input_ids"] == want
    with torch.no_grad():
        _, scores = obj.forward(model, obj.make_batch(feats))  # padded batch of 3
        for f, row in zip(feats, scores):
            logits = model(torch.tensor([f["input_ids"]])).logits[0, f["answer_position"]]
            lp = torch.log_softmax(logits.float(), -1)[obj.label_token_ids]
            torch.testing.assert_close(row, lp, atol=1e-5, rtol=0)


def test_truncation_keeps_the_pattern_and_answer_position(vb):
    obj = _obj(vb, "mlm")
    long = TextExample(" ".join(["good"] * 80), None, "1", "x:9")
    f = obj.encode_examples(vb.tok, [long], ["0", "1"], 20)[0]
    assert len(f["input_ids"]) == 20 and f["truncated"]
    assert f["input_ids"][f["answer_position"]] == vb.tok.mask_token_id and f["input_ids"][-1] == vb.tok.sep_token_id


@pytest.mark.parametrize("mode", ["prompt-tuning", "p-tuning", "prefix-tuning"])
@pytest.mark.parametrize("kind", ["mlm", "causal"])
def test_only_the_prompt_trains_and_scores_match_unpadded_rows(vb, mode, kind):
    torch.manual_seed(0)
    model = plmkit.load(vb.dir / kind)
    obj = _obj(vb, kind)
    obj.prepare(model)
    apply_mode(model, ModeConfig(mode, prompt_tokens=3, prompt_hidden=16), label_token_ids=obj.label_token_ids)
    counts = count_parameters(model)
    assert counts["trainable_params"] == sum(p.numel() for p in model.soft_prompt.parameters())
    feats = obj.encode_examples(vb.tok, EXAMPLES, ["0", "1"], 64)
    model.train()
    loss, _ = obj.loss(model, obj.make_batch(feats))
    loss.backward()
    assert all((p.grad is not None) == n.startswith("soft_prompt.") for n, p in model.named_parameters())
    model.eval()
    with torch.no_grad():
        _, batched = obj.forward(model, obj.make_batch(feats))
        for f, row in zip(feats, batched):
            _, one = obj.forward(model, obj.make_batch([f]))
            torch.testing.assert_close(row, one[0], atol=1e-5, rtol=0)


def test_prompt_init_vocab_labels_random(vb):
    model = plmkit.load(vb.dir / "causal")
    emb = model.embeddings.word.weight
    p = PromptTuning(model, 5, seed=0, init="labels", label_token_ids=[7, 9])
    torch.testing.assert_close(p.prompt[:2], emb[[7, 9]])
    v = PromptTuning(model, 5, seed=0, init="vocab")
    torch.testing.assert_close(p.prompt[2:], v.prompt[2:])  # the rest: the same vocabulary rows
    assert any(torch.equal(v.prompt[i], emb[j]) for i in range(5) for j in range(emb.shape[0]))
    r = PromptTuning(model, 5, seed=0, init="random")
    assert r.prompt.abs().max() <= 0.5 and not torch.equal(r.prompt, v.prompt)
    with pytest.raises(UserError, match="--prompt-init labels needs the label words"):
        PromptTuning(model, 5, init="labels")
    with pytest.raises(UserError, match="applies to --mode prompt-tuning"):
        build_soft_prompt(model, "prefix-tuning", 3, init="labels")


def _main(*argv):
    from plmkit.cli.main import main

    return main([str(a) for a in argv])


@pytest.mark.parametrize("kind, mode", [("mlm", "prompt-tuning"), ("causal", "prefix-tuning"),
                                        ("causal", "prompt-tuning")])
def test_finetune_with_verbalizer_saves_the_prompt_and_reloads(vb, tmp_path, capsys, kind, mode):
    from safetensors.torch import load_file

    out = tmp_path / "ck"
    extra = ["--prompt-init", "labels"] if mode == "prompt-tuning" else []
    assert _main("finetune", "--task", "classification", "--model", vb.dir / kind, "--data", vb.data, "--out", out,
                 "--mode", mode, "--verbalizer", vb.dir / f"{kind}.yaml", "--prompt-tokens", 4, "--prompt-hidden",
                 16, "--epochs", 2, "--lr", "3e-2", "--batch-size", 16, "--max-seq-len", 32, "--no-epoch-eval",
                 *extra) == 0
    res = json.loads((out / "eval.json").read_text())
    keys = set(load_file(str(out / "weights.safetensors")))
    assert keys and all(k.startswith("soft_prompt.") for k in keys)
    assert res["verbalizer"]["label_words"] == {"0": " bad", "1": " good"}
    info = json.loads((out / "task.json").read_text())
    assert info["verbalizer"]["masked"] == (kind == "mlm") and info["mode_config"]["prompt_init"] in ("vocab", "labels")
    assert _main("evaluate", "--checkpoint", out, "--data", vb.data, "--out", tmp_path / "e.json") == 0
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == pytest.approx(res["accuracy"])
    assert _main("predict", "--checkpoint", out, "--input", vb.data / "dev.tsv", "--out", tmp_path / "p.jsonl") == 0
    preds = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    gold = [line.split("\t")[1] for line in (vb.data / "dev.tsv").read_text().splitlines()[1:]]
    key = next(k for k in ("label", "prediction") if k in preds[0])
    assert np.mean([str(p[key]) == g for p, g in zip(preds, gold)]) == pytest.approx(res["accuracy"])
    if kind == "causal":  # plm generate with the saved prompt applied; equal to generating in Python
        from plmkit.tasks.checkpoint import load_checkpoint

        capsys.readouterr()
        assert _main("generate", out, "good fun", "--max-new-tokens", 6, "--ignore-eos", "--precision", "fp32") == 0
        text = capsys.readouterr().out.strip()
        model, _, _, tok = load_checkpoint(out)
        ids = tok.encode("good fun", add_special_tokens=False)
        with torch.no_grad():
            gen = model.eval().generate(torch.tensor([ids]), max_new_tokens=6, eos_token_id=[])[0, len(ids):]
        assert text == tok.decode(gen.tolist(), skip_special_tokens=True).strip()
        assert hasattr(model, "soft_prompt")


def test_reloaded_prompt_gives_identical_scores(vb, tmp_path):
    from plmkit.tasks.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(1)
    model = plmkit.load(vb.dir / "causal")
    obj = _obj(vb, "causal")
    obj.prepare(model)
    mc = ModeConfig("prompt-tuning", prompt_tokens=3)
    apply_mode(model, mc, label_token_ids=obj.label_token_ids)
    with torch.no_grad():
        model.soft_prompt.prompt.add_(torch.randn_like(model.soft_prompt.prompt))
    from dataclasses import asdict

    info = {"task": "classification", "kind": "classification", "labels": ["0", "1"], "num_outputs": 2,
            "mode": "prompt-tuning", "mode_config": asdict(mc), "pooling": "none", "base_model": str(vb.dir / "causal"),
            "max_seq_len": 64, "doc_stride": 128, "pad_id": 0, "regularizer": None, "verbalizer": obj.info()}
    save_checkpoint(tmp_path, model, vb.tok, info)
    again, obj2, _, tok2 = load_checkpoint(tmp_path)
    feats = obj.encode_examples(vb.tok, EXAMPLES, ["0", "1"], 64)
    assert obj2.encode_examples(tok2, EXAMPLES, ["0", "1"], 64) == feats
    with torch.no_grad():
        a = obj.forward(model.eval(), obj.make_batch(feats))[1]
        b = obj2.forward(again.eval(), obj2.make_batch(feats))[1]
    assert torch.equal(a, b)
    ids = torch.tensor([feats[0]["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model.generate(ids, max_new_tokens=5, eos_token_id=[]),
                           again.generate(ids, max_new_tokens=5, eos_token_id=[]))


@pytest.mark.parametrize("what, message", [
    ("multi", r"verbalizer ' good fun' of label '1' is \d+ tokens .* plm icl"),
    ("nohead", r"--verbalizer needs a model with its LM or MLM head"),
    ("labels-init", r"--prompt-init labels initialises from the label words: give --verbalizer"),
    ("mask-causal", r"slot \{mask\} marks an MLM's answer position"),
    ("icl-mask", r"slot \{mask\} is for --verbalizer patterns"),
])
def test_refusals_one_line_exit_2(vb, tmp_path, capsys, what, message):
    (tmp_path / "multi.yaml").write_text('template: "{text} it was"\nverbalizer: {"0": " bad", "1": " good fun"}\n')
    model, verb, extra = vb.dir / "causal", tmp_path / "multi.yaml", []
    if what == "nohead":
        model, verb = vb.data / "model", vb.dir / "mlm.yaml"
    elif what == "labels-init":
        verb, extra = None, ["--prompt-init", "labels"]
    elif what == "mask-causal":
        verb = vb.dir / "mlm.yaml"
    argv = ["finetune", "--task", "classification", "--model", model, "--data", vb.data, "--out", tmp_path / "o",
            "--mode", "prompt-tuning", "--epochs", 1, *extra] + (["--verbalizer", verb] if verb else [])
    if what == "icl-mask":
        argv = ["icl", "--model", vb.dir / "causal", "--task", "classification", "--data", vb.data, "--template",
                vb.dir / "mlm.yaml", "--out", tmp_path / "o"]
    rc = _main(*argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(message, err), err


def test_finetune_precision_bf16_trains_under_autocast_and_records_it(vb, tmp_path):
    """--precision bf16: the Trainer runs the steps under bf16 autocast (recorded in eval.json); the soft prompt is trained in float32 and the loss stays finite."""
    from safetensors.torch import load_file

    out = tmp_path / "bf16"
    assert _main("finetune", "--task", "classification", "--model", vb.dir / "causal", "--data", vb.data, "--out",
                 out, "--mode", "prefix-tuning", "--verbalizer", vb.dir / "causal.yaml", "--prompt-tokens", 4,
                 "--prompt-hidden", 16, "--epochs", 1, "--lr", "3e-2", "--batch-size", 16, "--max-seq-len", 32,
                 "--no-epoch-eval", "--precision", "bf16") == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["precision"] == "bf16" and res["train_steps"] >= 1
    assert all(v.dtype == torch.float32 for v in load_file(str(out / "weights.safetensors")).values())
    losses = [json.loads(x)["loss"] for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert losses and np.isfinite(losses).all()
    assert json.loads((out / "task.json").read_text())["config"]["precision"] == "bf16"
