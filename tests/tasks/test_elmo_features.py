"""ELMo under ``plm finetune --mode features``.

The task head's scalar mix (gamma, softmax s_j over the char-CNN layer and both biLSTM layers)
receives gradients while the biLM stays frozen; an ELMo checkpoint written by
``plmkit.classic.elmo.save_elmo`` runs through the CLI (features and full mode) and reloads for
``plm evaluate``.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

import plmkit
from plmkit.classic.elmo import save_elmo
from plmkit.cli.main import main
from plmkit.classic.recurrent import build
from plmkit.tasks.modes import ModeConfig, apply_mode
from plmkit.tasks.objective import HEAD_NAME, TaskObjective
from plmkit.tasks.checkpoint import recurrent_features

POS = ["good", "great", "fun", "lovely", "superb"]
NEG = ["bad", "awful", "boring", "dull", "poor"]
FILL = ["the", "movie", "film", "was", "a", "plot", "and", "very", "story", "it"]


@pytest.fixture(scope="module")
def elmo_dir(tmp_path_factory):
    """A tiny random ELMo over FILL words; the sentiment words join through ``extra_words``.
    (initializer_range 1.0: at the default 0.1 a random char-CNN spells "good" and "bad" almost alike.)"""
    d = tmp_path_factory.mktemp("elmo")
    torch.manual_seed(0)
    vocab = ["<eos>", "<pad>", "<unk>"] + FILL
    model = build("elmo-tiny", vocab_size=len(vocab), initializer_range=1.0)
    info = save_elmo(model, vocab, d / "elmo", extra_words=POS + NEG + ["the"])
    assert info["added_words"] == len(POS + NEG)  # "the" is already there
    rng = random.Random(0)
    for split, n in (("train", 160), ("dev", 40)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            y = rng.random() < 0.5
            words = rng.sample(FILL, 4) + [rng.choice(POS if y else NEG)]
            rng.shuffle(words)
            rows.append(f"{' '.join(words)}\t{int(y)}")
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return d


def test_scalar_mix_trains_and_the_bilm_stays_frozen(elmo_dir):
    tok = plmkit.load_tokenizer(elmo_dir / "elmo")
    model = plmkit.load(str(elmo_dir / "elmo"))
    obj = TaskObjective("classification", 2, tok, pooling="mean", scalar_mix=True)
    obj.prepare(model)
    apply_mode(model, ModeConfig("features"))
    head = model.heads[HEAD_NAME]
    mix = head.scalar_mix
    assert mix.weights.numel() == 3  # char-CNN layer + 2 biLSTM layers
    backbone = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("heads.")}
    assert backbone and not any(p.requires_grad for n, p in model.named_parameters() if n in backbone)

    ids = [tok.encode(t) for t in ["the movie was great", "a dull plot", "it was very fun and good"]]
    batch = obj.make_batch([{"input_ids": x, "token_type_ids": [0] * len(x), "label": y}
                            for x, y in zip(ids, [1, 0, 1])])
    assert batch["input_ids"][0, 0] == batch["input_ids"][0, 5] == tok.convert_tokens_to_ids("<eos>")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    loss, _ = obj.loss(model, batch)
    loss.backward()
    assert mix.weights.grad is not None and bool((mix.weights.grad.abs() > 0).all())
    assert mix.gamma.grad is not None and float(mix.gamma.grad.abs()) > 0
    assert all(p.grad is None for n, p in model.named_parameters() if n in backbone)
    before = mix.weights.detach().clone()
    opt.step()
    assert not torch.equal(before, mix.weights.detach())
    state = dict(model.named_parameters())
    assert all(torch.equal(v, state[n]) for n, v in backbone.items())


def test_plm_finetune_features_on_an_elmo_checkpoint(elmo_dir, capsys):
    out = elmo_dir / "ft_features"
    argv = ["finetune", "--task", "sst2", "--model", str(elmo_dir / "elmo"), "--data", str(elmo_dir),
            "--out", str(out), "--mode", "features", "--pooling", "mean", "--epochs", "20", "--lr", "3e-2",
            "--batch-size", "16", "--max-seq-len", "16"]
    assert main(argv) == 0
    res = json.loads((out / "eval.json").read_text())
    model = plmkit.load(str(elmo_dir / "elmo"))
    obj = TaskObjective("classification", 2, plmkit.load_tokenizer(elmo_dir / "elmo"), scalar_mix=True)
    obj.prepare(model)
    recurrent_features(model, "features")  # as finetune builds it: the mix standardises each layer
    assert res["trainable_params"] == sum(p.numel() for p in model.heads.parameters())
    assert res["accuracy"] >= 0.65, res  # a constant guess scores 0.525 on this dev set
    saved = load_file(str(out / "weights.safetensors"))  # features mode saves what trained: the head
    assert saved and all(k.startswith(f"heads.{HEAD_NAME}.") for k in saved)
    assert not torch.equal(saved[f"heads.{HEAD_NAME}.scalar_mix.weights"], torch.zeros(3))
    assert not torch.equal(saved[f"heads.{HEAD_NAME}.scalar_mix.shift.0"], torch.zeros(32))  # initialised from data
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(elmo_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(res["accuracy"])


def test_full_mode_elmo_checkpoint_reloads(elmo_dir, capsys):
    out = elmo_dir / "ft_full"
    argv = ["finetune", "--task", "sst2", "--model", str(elmo_dir / "elmo"), "--data", str(elmo_dir),
            "--out", str(out), "--epochs", "1", "--lr", "1e-3", "--batch-size", "32", "--max-seq-len", "16"]
    assert main(argv) == 0
    res = json.loads((out / "eval.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(elmo_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(res["accuracy"])


def test_features_mode_skips_the_bilm_softmax_and_standardises_the_layers(elmo_dir):
    tok = plmkit.load_tokenizer(elmo_dir / "elmo")
    model = plmkit.load(str(elmo_dir / "elmo"))
    model.eval()
    ids = torch.tensor([tok.encode("the movie was great"), tok.encode("a dull plot was")])
    mask = torch.ones_like(ids)
    ref = model(ids, attention_mask=mask, output_hidden_states=True)
    assert ref.logits is not None
    obj = TaskObjective("classification", 2, tok, pooling="mean", scalar_mix=True)
    obj.prepare(model)
    recurrent_features(model, "features")
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    assert out.logits is None and out.backward_logits is None  # the (B, T, V) softmax is not computed
    assert all(torch.equal(a, b) for a, b in zip(ref.hidden_states, out.hidden_states))
    mix = model.heads[HEAD_NAME].scalar_mix
    assert mix.shift is not None and len(mix.shift) == 3
