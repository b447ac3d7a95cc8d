"""``format: tsv``: one document per row from a headed TSV's named column; ``pkg:`` paths in recipes."""

from __future__ import annotations

import pytest

from plmkit.config import load_recipe
from plmkit.data.corpus import CorpusConfig, iter_documents
from plmkit.errors import UserError


def test_tsv_column_documents(tmp_path):
    (tmp_path / "t.tsv").write_text("sentence\tlabel\na fine film \t1\n\nflat and dull\t0\n", encoding="utf-8")
    docs = list(iter_documents([tmp_path / "t.tsv"], CorpusConfig(format="tsv", text_field="sentence")))
    assert docs == ["a fine film", "flat and dull"]
    with pytest.raises(UserError, match=r"t.tsv:1: no column 'sentense'.*did you mean 'sentence'"):
        list(iter_documents([tmp_path / "t.tsv"], CorpusConfig(format="tsv", text_field="sentense")))
    (tmp_path / "u.tsv").write_text("label\tsentence\n1\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"u.tsv:2: 1 columns, expected at least 2"):
        list(iter_documents([tmp_path / "u.tsv"], CorpusConfig(format="tsv", text_field="sentence")))


def test_pkg_paths_resolve_or_name_the_missing_package(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: {path: 'pkg:no_such_pkg_xyz'}\ndata: {train: [t.tsv]}\n")
    with pytest.raises(UserError, match="package 'no_such_pkg_xyz' is not installed"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "ok.yaml").write_text("model: {path: 'pkg:plmkit'}\n"
                                      "data: {train: [t.tsv], format: tsv, text_field: sentence}\n")
    r = load_recipe(tmp_path / "ok.yaml")
    assert r.model.path.endswith("plmkit") and r.data.format == "tsv" and r.data.text_field == "sentence"
    assert r.data.train == [str(tmp_path / "t.tsv")]
