"""Zero-shot cross-lingual transfer plumbing: ``plm finetune --language-id`` gives every token that language
embedding, and ``plm evaluate --task OTHER`` scores the checkpoint on another task's files (ChnSentiCorp's
columns for an SST-2-style model), with the checkpoint's language id or ``--language-id``; the scores are checked
against logits computed by hand from the loaded model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from plmkit.cli.main import main


@pytest.fixture(scope="module")
def xl_run(ft):
    return ft("xl_lang1", "--language-id", "1")


def _chnsenticorp_copy(workdir, tmp_path):
    """The toy dev sentences in ChnSentiCorp's dev layout (qid, label, text_a)."""
    rows = [ln.split("\t") for ln in (workdir / "dev.tsv").read_text().splitlines()[1:]]
    d = tmp_path / "chn"
    d.mkdir(parents=True)
    (d / "dev.tsv").write_text("qid\tlabel\ttext_a\n" + "".join(f"{i}\t{y}\t{x}\n" for i, (x, y) in enumerate(rows)))
    return d, rows


def _by_hand(workdir, rows, language):
    """Accuracy of the checkpoint on ``rows`` with every token type = ``language``: encode, forward, argmax."""
    from plmkit.tasks.checkpoint import load_checkpoint

    model, obj, info, tok = load_checkpoint(workdir / "xl_lang1")
    model.eval()
    correct = 0
    logits_all = []
    for text, y in rows:
        ids = torch.tensor([tok.encode(text)])
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                 "token_type_ids": torch.full_like(ids, language)}
        with torch.no_grad():
            _, logits = obj.forward(model, batch)
        logits_all.append(logits[0].numpy())
        correct += int(info["labels"][int(np.argmax(logits_all[-1]))] == y)
    return correct / len(rows), np.stack(logits_all)


def test_language_id_and_cross_task_evaluation(workdir, xl_run, tmp_path, capsys):
    cfg = json.loads((workdir / "xl_lang1" / "task.json").read_text())["config"]
    assert cfg["language_id"] == 1
    acc1, logits1 = _by_hand(workdir, _chnsenticorp_copy(workdir, tmp_path)[1], 1)
    assert xl_run["accuracy"] == pytest.approx(acc1)  # fine-tuning's own dev score used language 1
    chn, rows = _chnsenticorp_copy(workdir, tmp_path / "a")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(workdir / "xl_lang1"), "--data", str(chn),
                 "--task", "chnsenticorp"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["task"] == "chnsenticorp" and ev["examples"] == len(rows) and ev["language_id"] == 1
    assert ev["accuracy"] == pytest.approx(acc1)
    acc0, logits0 = _by_hand(workdir, rows, 0)
    assert np.abs(logits0 - logits1).max() > 1e-4  # the language embedding changes the prediction inputs
    assert main(["evaluate", "--checkpoint", str(workdir / "xl_lang1"), "--data", str(chn),
                 "--task", "chnsenticorp", "--language-id", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(acc0)


def test_cross_task_of_another_kind_is_refused(workdir, xl_run, tmp_path, capsys):
    chn, _ = _chnsenticorp_copy(workdir, tmp_path)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(workdir / "xl_lang1"), "--data", str(chn),
                 "--task", "conll2003"]) == 2
    err = capsys.readouterr().err
    assert "--task conll2003: a token task; the checkpoint was fine-tuned on classification" in err
    assert main(["evaluate", "--checkpoint", str(workdir / "xl_lang1"), "--data", str(chn),
                 "--language-id", "-1"]) == 2
