"""Soft prompts (prompt tuning, P-tuning, prefix tuning): only the prompt parameters (and the task head) get
gradients, the frozen base is unchanged by training, cached decoding equals uncached decoding, and
``plm finetune --mode ...`` saves only the trained parameters and reloads them for ``plm evaluate``."""

from __future__ import annotations

import json

import pytest
import torch

import plmkit
from plmkit.prompting.soft import PrefixCache, attach, build_soft_prompt
from plmkit.tasks.modes import SOFT_PROMPT_MODES, ModeConfig, apply_mode, count_parameters

MODES = list(SOFT_PROMPT_MODES)


def _llama(mode, seed=0):
    torch.manual_seed(seed)
    model = plmkit.load("llama-tiny").eval()
    attach(model, build_soft_prompt(model, mode, 5, encoder="lstm", hidden=32, seed=seed))
    with torch.no_grad():  # a prompt that matters: larger than its initialisation
        for p in model.soft_prompt.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


@pytest.mark.parametrize("mode", MODES)
def test_cached_generation_equals_uncached(mode):
    model = _llama(mode)
    ids = torch.randint(3, 1000, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding on the second row
    with torch.no_grad():
        a = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, use_cache=True)
        b = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("mode", MODES)
def test_forward_with_cache_in_two_steps_equals_one_pass_and_prompt_matters(mode):
    model = _llama(mode)
    ids = torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :5], use_cache=True)
        assert not isinstance(first.past_key_values, PrefixCache)
        second = model(ids[:, 5:], past_key_values=first.past_key_values, use_cache=True)
        torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), full, atol=1e-5, rtol=1e-4)
        assert full.shape[:2] == ids.shape
        torch.manual_seed(0)
        plain = plmkit.load("llama-tiny").eval()
        assert (plain(ids).logits - full).abs().max() > 1e-3


def test_dropping_prefix_reparametrisation_keeps_outputs():
    model = _llama("prefix-tuning")
    ids = torch.randint(3, 1000, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(ids).logits
        model.soft_prompt.drop_reparametrisation()
        assert [n for n, _ in model.soft_prompt.named_parameters()] == ["prefix"]
        torch.testing.assert_close(model(ids).logits, before)


def test_prompt_tuning_equals_prepending_the_embeddings():
    """Independent computation: the virtual tokens as explicit inputs_embeds of the plain model."""
    model = _llama("prompt-tuning")
    torch.manual_seed(0)
    plain = plmkit.load("llama-tiny").eval()
    ids = torch.randint(3, 1000, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        emb = torch.cat([model.soft_prompt.prompt[None], plain.embeddings.word(ids)], 1)
        want = plain(inputs_embeds=emb).logits[:, 5:]
        torch.testing.assert_close(model(ids).logits, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_only_prompt_and_head_train_and_base_is_unchanged(mode):
    from plmkit.tasks.objective import TaskObjective

    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=100)

    class Tok:
        pad_token_id, cls_token_id, sep_token_id = 0, 1, 2

    obj = TaskObjective("classification", 2, Tok(), pooling="mean")
    obj.prepare(model)
    apply_mode(model, ModeConfig(mode, prompt_tokens=4, prompt_hidden=16))
    base = {n: p.detach().clone() for n, p in model.named_parameters()
            if not n.startswith(("soft_prompt.", "heads."))}
    counts = count_parameters(model)
    prompt_n = sum(p.numel() for p in model.soft_prompt.parameters())
    head_n = sum(p.numel() for p in model.heads.parameters())
    assert counts["trainable_params"] == prompt_n + head_n
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(3, 100, (4, 8), generator=g), "token_type_ids": torch.zeros(4, 8, dtype=torch.long),
             "attention_mask": torch.ones(4, 8, dtype=torch.long), "labels": torch.tensor([0, 1, 0, 1])}
    batch["attention_mask"][0, 6:] = 0
    model.train()
    before = {n: p.detach().clone() for n, p in model.soft_prompt.named_parameters()}
    loss, _ = obj.loss(model, batch)
    loss.backward()
    for n, p in model.named_parameters():
        if n.startswith("soft_prompt."):
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        elif not n.startswith("heads."):
            assert p.grad is None, n
    opt.step()
    for n, p in model.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n
    assert any(not torch.equal(p, before[n]) for n, p in model.soft_prompt.named_parameters())


@pytest.mark.parametrize("mode", ["prefix-tuning", "prompt-tuning"])
def test_finetune_saves_only_prompt_and_head_and_evaluate_reloads(mode, ft, workdir, tmp_path, capsys):
    from safetensors.torch import load_file

    from plmkit.cli.main import main

    res = ft(f"soft-{mode}", "--mode", mode, "--prompt-tokens", "4", "--prompt-hidden", "32", "--epochs", "2")
    out = workdir / f"soft-{mode}"
    keys = set(load_file(str(out / "weights.safetensors")))
    assert keys and all(k.startswith(("soft_prompt.", "heads.")) for k in keys)
    assert any(k.startswith("soft_prompt.") for k in keys)
    assert 0 < res["trainable_params"] < res["total_params"]
    info = json.loads((out / "task.json").read_text())
    assert info["weights"] == "trained" and info["mode_config"]["prompt_tokens"] == 4
    assert (workdir / "model").resolve().as_posix() in info["base_model"]
    if mode == "prefix-tuning":  # the reparametrising MLP was dropped: only the prefixes are saved
        assert {k for k in keys if k.startswith("soft_prompt.")} == {"soft_prompt.prefix"}
        assert info["mode_config"]["prefix_reparam"] is False
        assert res["saved_prompt_params"] < res["trainable_params"]
    rc = main(["evaluate", "--checkpoint", str(out), "--data", str(workdir), "--out", str(tmp_path / "e.json")])
    assert rc == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["accuracy"] == pytest.approx(res["accuracy"])
    assert main(["predict", "--checkpoint", str(out), "--input", str(workdir / "dev.tsv"),
                 "--out", str(tmp_path / "p.jsonl")]) == 0
    preds = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    gold = [line.split("\t")[1] for line in (workdir / "dev.tsv").read_text().splitlines()[1:]]
    assert len(preds) == len(gold)
    key = next(k for k in ("label", "prediction") if k in preds[0])
    acc = sum(str(p[key]) == g for p, g in zip(preds, gold)) / len(gold)
    assert acc == pytest.approx(res["accuracy"])


def test_deepcopy_routes_through_its_own_prompt():
    import copy

    model = _llama("prompt-tuning")
    twin = copy.deepcopy(model)
    ids = torch.randint(3, 1000, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        twin.soft_prompt.prompt.add_(1.0)
        assert (twin(ids).logits - model(ids).logits).abs().max() > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_classification_head_on_a_causal_lm_without_token_types(mode):
    """Llama has no token-type embeddings (type_vocab_size 0): the task objective must not pass token_type_ids."""
    from plmkit.tasks.objective import TaskObjective

    torch.manual_seed(0)
    model = plmkit.load("llama-tiny", vocab_size=100)
    assert model.config.type_vocab_size == 0

    class Tok:
        pad_token_id, cls_token_id, sep_token_id = 0, 1, 2

    obj = TaskObjective("classification", 2, Tok(), pooling="last")
    obj.prepare(model)
    apply_mode(model, ModeConfig(mode, prompt_tokens=3, prompt_hidden=16))
    feats = [{"input_ids": [5, 6, 7, 8], "token_type_ids": [0] * 4, "label": 1},
             {"input_ids": [9, 10], "token_type_ids": [0] * 2, "label": 0}]
    loss, _ = obj.loss(model, obj.make_batch(feats))
    loss.backward()
    assert all(p.grad is not None for p in model.soft_prompt.parameters())
