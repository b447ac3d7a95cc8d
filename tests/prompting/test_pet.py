"""PET (plm finetune --mode pet): the loss against a hand computation, BERT masking, ensemble soft labels,
the whole pipeline on a tiny BERT with its MLM head, and refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.prompting.pet import PETObjective, mask_tokens, soft_labels
from plmkit.prompting.verbalizer import load_verbalizer
from test_verbalizer import EXAMPLES, _main, vb  # noqa: F401  (tiny BERT + MLM head, toy sentiment data)


def test_pet_loss_is_weighted_ce_plus_mlm_by_hand(vb):  # noqa: F811
    torch.manual_seed(0)
    model = plmkit.load(vb.dir / "mlm").eval()  # eval: no dropout, so two forwards agree
    t = load_verbalizer(vb.dir / "mlm.yaml", ["0", "1"], pair=False)
    unl = [vb.tok.encode(s) for s in ("the film was dull", "good fun and a lovely story", "poor")]
    alpha = 0.3
    obj = PETObjective(t, vb.tok, ["0", "1"], alpha, unl, batch_size=2, seed=5)
    obj.prepare(model)
    batch = obj.make_batch(obj.encode_examples(vb.tok, EXAMPLES, ["0", "1"], 64))
    state = obj.g.get_state()
    with torch.no_grad():
        loss, metrics = obj.loss(model, batch)
        # the same random draws, by hand
        g = torch.Generator()
        g.set_state(state)
        idx = torch.randint(len(unl), (2,), generator=g).tolist()
        rows = [unl[i] for i in idx]
        T = max(map(len, rows))
        ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
        att = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
        special = (ids == vb.tok.cls_token_id) | (ids == vb.tok.sep_token_id) | (ids == 0) | (att == 0)
        inputs, sel = mask_tokens(ids, special, vb.tok.mask_token_id, model.config.vocab_size, 0.15, g)
        logits = model(inputs, attention_mask=att, token_type_ids=torch.zeros_like(inputs)).logits
        mlm = F.cross_entropy(logits[sel], ids[sel])
        scores = []
        for row, pos in zip(batch["input_ids"], batch["answer_position"]):
            n = int((row != 0).sum())
            lp = model(row[None, :n]).logits[0, pos].log_softmax(-1)
            scores.append(lp[obj.label_token_ids])
        ce = F.cross_entropy(torch.stack(scores), batch["labels"])
    assert float(loss) == pytest.approx(float((1 - alpha) * ce + alpha * mlm), abs=1e-5)
    assert metrics["mlm_loss"] == pytest.approx(float(mlm), abs=1e-5)


def test_bert_masking_rates_and_specials():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (64, 256), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    inputs, sel = mask_tokens(ids, special, 3, 1000, 0.15, g)
    assert not sel[special].any()
    assert sel.float().mean() == pytest.approx(0.15 * 254 / 256, abs=0.01)
    assert (inputs[sel] == 3).float().mean() == pytest.approx(0.8, abs=0.03)
    assert (inputs[sel] == ids[sel]).float().mean() == pytest.approx(0.1 + 0.1 / 1000, abs=0.03)
    assert torch.equal(inputs[~sel], ids[~sel])


def test_ensemble_soft_labels_by_hand():
    a, b = np.array([[0.0, -2.0], [-1.0, -1.0]]), np.array([[-2.0, 0.0], [-3.0, -1.0]])
    mean, q = soft_labels([a, b], 2.0)
    np.testing.assert_allclose(mean, [[-1.0, -1.0], [-2.0, -1.0]])
    np.testing.assert_allclose(q[0], [0.5, 0.5])
    np.testing.assert_allclose(q[1], [np.exp(-1) / (np.exp(-1) + np.exp(-0.5)), np.exp(-0.5) / (np.exp(-1) + np.exp(-0.5))])


def test_pet_pipeline_on_a_tiny_bert(vb, tmp_path):  # noqa: F811
    pats = tmp_path / "patterns"
    pats.mkdir()
    (pats / "a.yaml").write_text('name: a\ntemplate: "{text} the movie was {mask} ."\nverbalizer: {"0": " bad", "1": " good"}\n')
    (pats / "b.yaml").write_text('name: b\ntemplate: "{mask} : {text}"\nverbalizer: {"0": " dull", "1": " fun"}\n')
    out = tmp_path / "pet"
    assert _main("finetune", "--task", "classification", "--model", vb.dir / "mlm", "--data", vb.data, "--out", out,
                 "--mode", "pet", "--verbalizer", pats, "--unlabelled", vb.data / "train.tsv", "--max-train-examples",
                 16, "--max-unlabelled", 48, "--epochs", 1, "--lr", "1e-3", "--batch-size", 16, "--max-seq-len", 32,
                 "--no-epoch-eval") == 0
    res = json.loads((out / "eval.json").read_text())
    assert [p["pattern"] for p in res["pet"]["patterns"]] == ["a", "b"]
    assert res["pet"]["alpha"] == 1e-4 and res["unlabelled_examples"] == 48 and res["train_examples"] == 16
    assert 0 <= res["pet"]["ensemble_dev"]["accuracy"] <= 1
    info = json.loads((out / "task.json").read_text())
    assert info["mode"] == "full" and info["weights"] == "all" and "verbalizer" not in info
    assert _main("evaluate", "--checkpoint", out, "--data", vb.data, "--out", tmp_path / "e.json") == 0
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == pytest.approx(res["accuracy"])


@pytest.mark.parametrize("what, message", [
    ("causal", r"--mode pet needs a masked LM with its MLM head"),
    ("nounl", r"--mode pet needs --unlabelled FILE"),
    ("noverb", r"--mode pet needs --verbalizer"),
])
def test_pet_refusals_one_line_exit_2(vb, tmp_path, capsys, what, message):  # noqa: F811
    argv = ["finetune", "--task", "classification", "--model", vb.dir / ("causal" if what == "causal" else "mlm"),
            "--data", vb.data, "--out", tmp_path / "o", "--mode", "pet"]
    if what != "noverb":
        argv += ["--verbalizer", vb.dir / ("causal.yaml" if what == "causal" else "mlm.yaml")]
    if what != "nounl":
        argv += ["--unlabelled", vb.data / "train.tsv"]
    rc = _main(*argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(message, err), err
