"""Every pretraining recipe in recipes/ parses, names a real preset and registered objectives with valid options,
and (when the shared datasets are present) points at files that exist. The other YAML files under recipes/
are checked by the tests of the package that reads them: ``editing/`` (knowledge-editing hyper-parameters,
tests/knowledge/test_edit.py) and ``prompts/`` (prompt templates, tests/prompting)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plmkit.config import load_recipe

REPO = Path(__file__).resolve().parents[2]
NOT_PRETRAINING = ("editing", "prompts", "label-text", "claims")  # label-text: tests/tasks/test_labeltext.py; claims: tests/reproduce
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml")
                 if p.relative_to(REPO / "recipes").parts[0] not in NOT_PRETRAINING)


def test_there_is_a_recipe_per_family():
    families = {p.parent.name for p in RECIPES}
    assert {"bert", "roberta", "albert", "electra", "gpt", "gpt2", "llama"} <= families


@pytest.fixture(scope="module")
def tokenizers():
    """Tiny tokenizers of each kind, to validate objective options (trained on a few sentences)."""
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    text = ["the quick brown fox jumps over the lazy dog . a second sentence here ."] * 20
    return lambda t: train_tokenizer_from_iterator(text, kind=t.kind, vocab_size={"bpe": 300, "unigram": 150}.get(
        t.kind, 60 if t.kind == "wordpiece" else 0), special_tokens=t.special_tokens, **t.options)


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(REPO / "recipes")) for p in RECIPES])
def test_recipe_is_valid(path, tokenizers):
    from plmkit import objectives
    from plmkit.models import load

    from plmkit.pipelines.pretrain import check_model

    recipe = load_recipe(path)
    check_model(recipe)  # the early check of plm pretrain (meta device) accepts every shipped recipe
    if recipe.tokenizer.train is None:  # a shipped tokenizer (pkg:NAME or a directory)
        from plmkit import load_tokenizer

        if not str(recipe.tokenizer.path).startswith("pkg:") and not Path(recipe.tokenizer.path).exists():
            pytest.skip(f"{recipe.tokenizer.path} (tokenizer.path) not found: made by another run first")

        tok = load_tokenizer(recipe.tokenizer.path)
    else:
        tok = tokenizers(recipe.tokenizer.train)
    model = load(recipe.model.preset, vocab_size=len(tok), **recipe.model.overrides)  # UserError if unknown
    max_pos = getattr(model.config, "max_position_embeddings", None)  # recurrent LMs have none
    if max_pos:
        assert recipe.data.seq_len + 2 <= max_pos
    for spec in recipe.objective:
        opts = {k: v for k, v in spec.items() if k not in ("name", "weight", "key", "data")}
        assert spec["name"] in objectives.REGISTRY, f"{path.name}: objective {spec['name']!r} is not registered"
        own = spec.get("data")  # the entry's own files (XLM's per-language streams, CoLAKE's T-REx facts)
        own = [own] if isinstance(own, str) else own
        if own and not Path(own[0]).exists():
            pytest.skip(f"{own[0]} not found (set PLMKIT_DATA)")
        from plmkit.config import OBJECTIVE_PATH_OPTIONS

        for key in sorted(OBJECTIVE_PATH_OPTIONS & set(opts)):  # files an objective reads (REALM corpus, T-REx triples)
            for f in [opts[key]] if isinstance(opts[key], str) else opts[key]:
                if not Path(f).exists():
                    pytest.skip(f"{f} (objective option {key}) not found (set PLMKIT_DATA)")
        if callable(getattr(objectives.REGISTRY[spec["name"]], "read_examples", None)):
            opts["max_facts"] = 100  # reads its own data before prepare (its heads depend on it): a small part
            obj = objectives.build(spec["name"], tokenizer=tok, **opts)
            obj.read_examples(own, recipe.data.seq_len)
        else:
            obj = objectives.build(spec["name"], tokenizer=tok, **opts)
        obj.prepare(model)  # backbone compatibility
    data = Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))
    if data.is_dir():
        for f in recipe.data.train + recipe.data.valid:
            assert Path(f).is_file(), f
