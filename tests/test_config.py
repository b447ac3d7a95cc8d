"""Recipe loading: dataclass mapping, path resolution, dotted overrides, one-line errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from plmkit.config import Recipe, TrainConfig, apply_overrides, dump_recipe, load_recipe, parse_override
from plmkit.errors import UserError

GOOD = """\
model: {preset: gpt2-tiny}
tokenizer: {train: {kind: char, vocab_size: 100}}
data:
  train: [corpus/a.txt]
  seq_len: 32
objective: {name: clm}
train:
  max_steps: 10
  lr: 3e-4
"""


def _write(tmp_path: Path, text: str, name="r.yaml") -> Path:
    (tmp_path / "corpus").mkdir(exist_ok=True)
    p = tmp_path / "sub" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(text.replace("corpus/a.txt", "../corpus/a.txt"))
    return p


def test_load_maps_sections_resolves_paths_and_reads_3e_4(tmp_path):
    r = load_recipe(_write(tmp_path, GOOD))
    assert isinstance(r, Recipe) and isinstance(r.train, TrainConfig)
    assert r.train.lr == 3e-4 and r.train.max_steps == 10 and r.train.batch_size == 16  # default kept
    assert r.data.train == [str((tmp_path / "corpus" / "a.txt").resolve())]
    assert r.objective == [{"name": "clm"}]
    assert r.tokenizer.train.kind == "char"


def test_overrides_take_precedence_and_resolve_paths_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = load_recipe(_write(tmp_path, GOOD), ["train.lr=1e-3", "train.batch_size=8", "data.valid=v.txt",
                                             "objective.0.block_documents=true", "model.overrides.hidden_size=48"])
    assert r.train.lr == 1e-3 and r.train.batch_size == 8
    assert r.data.valid == [str(tmp_path / "v.txt")]
    assert r.objective[0]["block_documents"] is True
    assert r.model.overrides == {"hidden_size": 48}


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown key 'train.lrr' (did you mean 'lr'?)"),
    ("trian.lr=1", "unknown section 'trian' (did you mean 'train'?)"),
    ("train.lr", "expected KEY=VALUE"),
    ("train.max_steps=abc", "command line: train.max_steps=abc: expected an integer, got 'abc'"),
    ("train.batch_size=0", "command line: train.batch_size=0: expected a positive integer, got 0"),
    ("train.schedule=cosin", "expected one of 'linear', 'cosine'"),
    ("train.compile=maybe", "command line: train.compile=maybe: expected true/false"),
])
def test_bad_overrides_are_one_line_user_errors(tmp_path, override, message):
    with pytest.raises(UserError) as e:
        load_recipe(_write(tmp_path, GOOD), [override])
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("  lr: 3e-4", "  lr: 3e-4\n  warmpu_steps: 3"), "r.yaml:10: train.warmpu_steps: unknown key (did you mean 'warmup_steps'?)"),
    (GOOD.replace("seq_len: 32", "seq_len: [1]"), "r.yaml:5: data.seq_len: expected an integer"),
    (GOOD.replace("model: {preset: gpt2-tiny}", "model: {}"), "expected exactly one of 'preset'"),
    (GOOD.replace("objective: {name: clm}", "objective: [{weight: 1}]"), "objective.0: expected a mapping with a 'name' key"),
    (GOOD + "extra: 1\n", "r.yaml:10: extra: unknown key"),
    ("model: [unclosed\n", "r.yaml:2: malformed YAML"),
    ("- just a list\n", "expected a mapping with sections"),
])
def test_bad_recipes_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(UserError) as e:
        load_recipe(_write(tmp_path, text))
    assert message in str(e.value), str(e.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_dump_roundtrip(tmp_path):
    r = load_recipe(_write(tmp_path, GOOD), ["train.seed=7"])
    dump_recipe(r, tmp_path / "resolved.yaml")
    again = load_recipe(tmp_path / "resolved.yaml")
    assert again == r


def test_parse_override_yaml_values():
    assert parse_override("data.train=[a.txt, b.txt]") == (["data", "train"], ["a.txt", "b.txt"])
    assert parse_override("train.progress=null") == (["train", "progress"], None)
    raw = {"train": {}}
    apply_overrides(raw, ["train.lr=0.5"])
    assert raw == {"train": {"lr": 0.5}}


def test_field_docs_are_the_docstrings_under_the_fields():
    from plmkit.config import field_docs

    docs = field_docs(TrainConfig)
    assert docs["max_steps"].startswith("Optimizer steps to run")
    assert docs["head_lr"].startswith("Peak learning rate of the top parameter group")
    assert "beta1" not in docs  # a field without a docstring has none


def test_head_lr_in_a_recipe_and_as_an_override(tmp_path):
    r = load_recipe(_write(tmp_path, GOOD.replace("  lr: 3e-4", "  lr: 3e-4\n  head_lr: 1e-3")))
    assert r.train.head_lr == pytest.approx(1e-3)
    r = load_recipe(_write(tmp_path, GOOD), ["train.head_lr=null"])
    assert r.train.head_lr is None
    with pytest.raises(UserError, match="command line: train.head_lr=-1: expected a positive number"):
        load_recipe(_write(tmp_path, GOOD), ["train.head_lr=-1"])


def test_tuple_fields_take_a_list_or_comma_separated_text():
    from plmkit.config import _coerce, _Ctx

    ctx = _Ctx("r.yml", {("t",): 4})
    assert _coerce([0, "0.5"], tuple[float, ...], ("t",), ctx) == (0.0, 0.5)
    assert _coerce("0, 0.5,1", tuple[float, ...], ("t",), ctx) == (0.0, 0.5, 1.0)
    with pytest.raises(UserError, match=r"r.yml:4: t.1: expected a number, got 'x'"):
        _coerce("0,x", tuple[float, ...], ("t",), ctx)
