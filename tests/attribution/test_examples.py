"""Training examples of a run (store documents + corpus texts) and the queries file."""

import json

import pytest

from attr_toy import DOCS, toy_run
from plmkit.attribution import TrainingExamples, load_queries
from plmkit.attribution.queries import check_proponents
from plmkit.errors import UserError


def test_from_run_pairs_store_documents_with_corpus_texts(tmp_path_factory):
    run = toy_run(tmp_path_factory)
    ex = TrainingExamples.from_run(run)
    assert len(ex) == len(DOCS)
    for i, doc in enumerate(DOCS):
        assert ex.text(i) == doc
        assert ex.input_ids(i) == ex.tokenizer.encode(doc, add_special_tokens=False)
    short = TrainingExamples.from_run(run, max_len=4)
    assert short.input_ids(0) == ex.input_ids(0)[:4]
    decoded = TrainingExamples.from_store(run / "data" / "train", ex.tokenizer)  # no corpus: decoded ids
    assert decoded.text(3) == DOCS[3] and list(decoded.texts()) == DOCS
    with pytest.raises(IndexError):
        ex.text(len(DOCS))


def test_a_corpus_that_does_not_match_the_store_is_refused(tmp_path_factory, tmp_path):
    run = toy_run(tmp_path_factory)
    fewer = tmp_path / "fewer.txt"
    fewer.write_text("\n".join(DOCS[:-1]) + "\n")
    with pytest.raises(UserError, match=r"fewer.txt: 7 documents, but the run's token store .* holds 8"):
        TrainingExamples.from_run(run, corpus=[str(fewer)])
    edited = tmp_path / "edited.txt"
    edited.write_text("\n".join(DOCS[:3] + ["bob was born in lima in june"] + DOCS[4:]) + "\n")
    with pytest.raises(UserError, match=r"edited.txt: document 3 does not match the run's token store"):
        TrainingExamples.from_run(run, corpus=[str(edited)])
    with pytest.raises(UserError, match="no such file"):
        TrainingExamples.from_run(run, corpus=[str(tmp_path / "missing.txt")])


def test_from_files_skips_empty_documents(tmp_path):
    from attr_toy import CharTok

    f = tmp_path / "c.txt"
    f.write_text("one doc\n\n  \nsecond doc\n")
    ex = TrainingExamples.from_files([f], CharTok())
    assert len(ex) == 2 and ex.text(1) == "second doc" and ex.input_ids(0) == CharTok().encode("one doc")


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_queries_read_and_checked(tmp_path):
    p = _write(tmp_path / "q.jsonl", [{"id": 1, "prompt": "a is in", "target": "b", "proponents": [0, 2]},
                                      "", {"id": "x", "prompt": "c", "target": "d"}])
    qs = load_queries(p)
    assert [(q.id, q.text, q.proponents) for q in qs] == [("1", "a is in b", [0, 2]), ("x", "c d", None)]
    with pytest.raises(UserError, match=r"query '1': proponent 2 is not an example id"):
        check_proponents(qs, 2, str(p))


@pytest.mark.parametrize("row, message", [
    ({"id": 1, "prompt": "a"}, r"q.jsonl:2: missing key 'target'"),
    ({"prompt": "a", "target": "b"}, r"q.jsonl:2: missing key 'id'"),
    ({"id": 1, "prompt": "", "target": "b"}, r"q.jsonl:2: key 'prompt': expected a non-empty string"),
    ({"id": 2, "prompt": "a", "target": "b", "proponents": [1, -1]}, r"q.jsonl:2: key 'proponents'"),
    ({"id": 0, "prompt": "a", "target": "b"}, r"q.jsonl:2: key 'id': 0 repeats"),
    ("{not json", r"q.jsonl:2: not valid JSON"),
    ([1, 2], r"q.jsonl:2: expected a JSON object"),
])
def test_bad_queries_name_file_line_and_key(tmp_path, row, message):
    p = _write(tmp_path / "q.jsonl", [{"id": 0, "prompt": "p", "target": "t"}, row])
    with pytest.raises(UserError, match=message):
        load_queries(p)
