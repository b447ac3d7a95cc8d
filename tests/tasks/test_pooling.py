"""``--pooling auto``: a sentence-transformers checkpoint's declared pooling, else the family's usual one; the
pooled vectors against an independent computation; the resolved choice recorded in eval.json / task.json."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from plmkit.cli.main import main
from plmkit.errors import UserError
from plmkit.tasks.heads import SequenceHead, pool_states
from plmkit.tasks.pooling import declared_pooling, family_pooling, resolve_pooling

ST_MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
              {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def _st_flags(**on) -> dict:
    flags = {f"pooling_mode_{k}": False for k in ("cls_token", "mean_tokens", "max_tokens",
                                                  "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")}
    flags.update({f"pooling_mode_{k}": v for k, v in on.items()})
    return {"word_embedding_dimension": 64, **flags}


def _declare(d, modules=ST_MODULES, **on):
    """Make ``d`` look like a sentence-transformers folder declaring the ``on`` pooling flags."""
    (d / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (d / "1_Pooling" / "config.json").write_text(json.dumps(_st_flags(**on)))
    if modules is not None:
        (d / "modules.json").write_text(json.dumps(modules))
    return d


@pytest.mark.parametrize("flag, expected", [("cls_token", "cls"), ("mean_tokens", "mean"), ("max_tokens", "max"),
                                            ("lasttoken", "last")])
def test_declared_pooling_follows_the_sentence_transformers_config(tmp_path, flag, expected):
    pooling, why = declared_pooling(_declare(tmp_path, **{flag: True}))
    assert pooling == expected and "1_Pooling" in why


def test_pooling_folder_is_the_one_modules_json_names(tmp_path):
    modules = [dict(m, path="pool") if m["name"] == "1" else m for m in ST_MODULES]
    _declare(tmp_path, modules=modules, cls_token=True)  # a stray 1_Pooling declaring cls ...
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "config.json").write_text(json.dumps(_st_flags(mean_tokens=True)))  # ... modules.json wins
    assert declared_pooling(tmp_path)[0] == "mean"
    (tmp_path / "modules.json").write_text(json.dumps(ST_MODULES[:1]))  # no Pooling module: nothing declared
    assert declared_pooling(tmp_path)[0] is None
    (tmp_path / "modules.json").unlink()  # older folders: 1_Pooling alone
    assert declared_pooling(tmp_path)[0] == "cls"


def test_undeclared_or_unsupported_pooling_falls_back_to_the_family(tmp_path):
    bert = SimpleNamespace(config=SimpleNamespace(family="bert", pooler=True, causal=False))
    assert resolve_pooling("auto", tmp_path, bert)[0] == "pooler"  # plain HF folder
    assert resolve_pooling("auto", "bert-tiny", bert)[0] == "pooler"  # a preset name, no folder
    _declare(tmp_path, cls_token=True, mean_tokens=True)  # concatenated modes: not followed, and said so
    pooling, why = resolve_pooling("auto", tmp_path, bert)
    assert pooling == "pooler" and "cls, mean" in why and "does not follow" in why
    _declare(tmp_path, mean_sqrt_len_tokens=True)
    assert resolve_pooling("auto", tmp_path, bert)[0] == "pooler"
    _declare(tmp_path, mean_tokens=True)
    assert resolve_pooling("auto", tmp_path, bert)[0] == "mean"
    assert resolve_pooling("cls", tmp_path, bert) == ("cls", "given")  # an explicit choice beats the declaration
    with pytest.raises(UserError, match="pooling must be one of"):
        resolve_pooling("avg", tmp_path, bert)
    (tmp_path / "modules.json").write_text("{not json")
    with pytest.raises(UserError, match="modules.json"):
        resolve_pooling("auto", tmp_path, bert)


def test_family_pooling_of_the_presets():
    import plmkit

    expected = {"bert-tiny": "pooler", "albert-tiny": "pooler", "roberta-tiny": "cls", "electra-tiny": "cls",
                "gpt-tiny": "last", "gpt2-tiny": "last", "llama-tiny": "last"}
    for name, pooling in expected.items():
        assert family_pooling(plmkit.load(name).config)[0] == pooling, name
    assert family_pooling(SimpleNamespace(family="elmo", causal=False))[0] == "mean"
    assert family_pooling(SimpleNamespace(family="xlnet", causal=False, pooler=False))[0] == "last"


def test_pool_states_against_an_explicit_loop():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    for i, n in enumerate(mask.sum(1).tolist()):
        real = h[i, :n]
        assert torch.allclose(pool_states(h, mask, "mean")[i], real.mean(0), atol=1e-6)
        assert torch.equal(pool_states(h, mask, "max")[i], real.max(0).values)
        assert torch.equal(pool_states(h, mask, "last")[i], real[-1])
        assert torch.equal(pool_states(h, mask, "cls")[i], real[0])
    assert torch.equal(pool_states(h, None, "last"), h[:, -1]) and torch.equal(pool_states(h, None, "max"), h.max(1).values)
    # padding beyond the real tokens never changes the pooled vector
    h2 = h.clone()
    h2[mask == 0] = 1e3
    for pooling in ("mean", "max", "last", "cls"):
        assert torch.allclose(pool_states(h2, mask, pooling), pool_states(h, mask, pooling)), pooling
    head = SequenceHead(4, 2, pooling="max")
    assert torch.equal(head.pool(SimpleNamespace(last_hidden_state=h, pooled=None), mask), pool_states(h, mask, "max"))
    with pytest.raises(ValueError):
        SequenceHead(4, 2, pooling="auto")  # the head takes a resolved pooling


@pytest.mark.parametrize("flag, expected", [("cls_token", "cls"), ("mean_tokens", "mean")])
def test_finetune_auto_follows_a_declared_pooling_and_records_it(workdir, tmp_path, flag, expected, capsys):
    from plmkit.tasks.checkpoint import load_checkpoint

    model_dir = tmp_path / "st"
    shutil.copytree(workdir / "model", model_dir)  # the tiny BERT (with a pooler) as a sentence-transformers folder
    _declare(model_dir, **{flag: True})
    out = tmp_path / "out"
    argv = ["finetune", "--task", "classification", "--model", str(model_dir), "--data", str(workdir),
            "--out", str(out), "--epochs", "1", "--batch-size", "16", "--max-seq-len", "32",
            "--max-train-examples", "32", "--max-eval-examples", "16"]
    assert main(argv) == 0
    assert f"pooling {expected} (declared by {model_dir / '1_Pooling' / 'config.json'})" in capsys.readouterr().out
    res = json.loads((out / "eval.json").read_text())
    info = json.loads((out / "task.json").read_text())
    assert res["pooling"] == expected and "1_Pooling" in res["pooling_source"]
    assert info["pooling"] == expected and info["config"]["pooling"] == "auto"
    _, obj, _, _ = load_checkpoint(out)  # the reloaded head pools the same way
    assert obj.pooling == expected
    # the same folder without the declaration: BERT's pooler (the family's choice)
    shutil.rmtree(model_dir / "1_Pooling")
    (model_dir / "modules.json").unlink()
    assert main(argv) == 0
    assert json.loads((out / "eval.json").read_text())["pooling"] == "pooler"
