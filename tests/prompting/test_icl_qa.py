"""plm icl --task multiple-choice / generation: option scores against a brute-force forward pass, greedy
answers against a hand-written greedy loop, SQuAD EM / F1 on hand examples, CLI layout and refusals."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from plmkit.errors import UserError
from plmkit.prompting.qa import (QAExample, QAPromptBuilder, answer_scores, generate_answers, load_qa_templates,
                                 parse_qa_template, read_qa_jsonl, sample_qa_demonstrations, score_choices)
from test_icl import FILL, NEG, POS, tiny  # noqa: F401  (the tiny llama + BPE fixture)

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "prompts"


def _mc_rows(rng, n):
    rows = []
    for _ in range(n):
        opts = rng.sample(POS + NEG + FILL, 3)
        rows.append({"question": " ".join(rng.sample(FILL, 4)), "options": opts, "answer": rng.randrange(3)})
    return rows


def _gen_rows(rng, n):
    return [{"question": " ".join(rng.sample(FILL, 3)), "context": " ".join(rng.sample(FILL, 5)),
             "answers": [rng.choice(POS), rng.choice(NEG)]} for _ in range(n)]


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    rng = random.Random(3)
    for task, rows in (("multiple-choice", _mc_rows), ("generation", _gen_rows)):
        (d / task).mkdir()
        for split, n in (("train", 10), ("dev", 5)):
            (d / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(rng, n)))
    return d


def _brute(model, ids_prompt, cont):
    with torch.no_grad():
        lp = model(torch.tensor([ids_prompt + cont])).logits[0].float().log_softmax(-1)
    return [float(lp[len(ids_prompt) - 1 + t, c]) for t, c in enumerate(cont)]


@pytest.mark.parametrize("score", ["sum", "mean", "pmi"])
def test_option_scores_equal_a_brute_force_forward(tiny, qa_data, score):  # noqa: F811
    train = read_qa_jsonl(qa_data / "multiple-choice" / "train.jsonl", "multiple-choice")
    dev = read_qa_jsonl(qa_data / "multiple-choice" / "dev.jsonl", "multiple-choice")
    t = load_qa_templates([RECIPES / "multiple-choice" / "question-answer.yaml"], "multiple-choice")[0]
    b = QAPromptBuilder(tiny.tok, t)
    demos = sample_qa_demonstrations(train, 3, 1)
    with torch.no_grad():
        recs = score_choices(tiny.model, b, demos, dev, score, batch_size=2)
    for ex, r in zip(dev, recs):
        full = b.full(demos, ex)
        # the whole prompt, tokenized in one piece, ends the demonstrations with the right answers
        text = "\n\n".join([f"Question: {d.question}\nAnswer: {d.options[d.answer]}" for d in demos]
                           + [f"Question: {ex.question}\nAnswer:"])
        assert full[len(b.bos):] == tiny.tok.encode(text, add_special_tokens=False)
        want = []
        for o in ex.options:
            c = tiny.tok.encode(" " + o, add_special_tokens=False)
            lp = _brute(tiny.model, full, c)
            s = sum(lp) if score != "mean" else sum(lp) / len(lp)
            if score == "pmi":
                s -= sum(_brute(tiny.model, b.full(demos, None), c))
            want.append(s)
        np.testing.assert_allclose(r["scores"], want, atol=1e-4, rtol=0)
        assert r["prediction"] == int(np.argmax(want)) and r["correct"] == (r["prediction"] == ex.answer)
        assert r["demonstrations_used"] == 3


def test_squad_exact_match_and_f1_on_hand_examples():
    assert answer_scores("The Eiffel Tower!", ["eiffel tower"]) == {"exact_match": 1.0, "f1": 1.0}
    s = answer_scores("in Paris France", ["Paris"])  # precision 1/3, recall 1
    assert s["exact_match"] == 0.0 and s["f1"] == pytest.approx(0.5)
    s = answer_scores("red car", ["blue car", "a red car"])  # max over golds: EM with the second
    assert s == {"exact_match": 1.0, "f1": 1.0}
    assert answer_scores("", ["x"]) == {"exact_match": 0.0, "f1": 0.0}


def test_greedy_answers_equal_a_hand_greedy_loop(tiny, qa_data):  # noqa: F811
    train = read_qa_jsonl(qa_data / "generation" / "train.jsonl", "generation")
    dev = read_qa_jsonl(qa_data / "generation" / "dev.jsonl", "generation")
    t = load_qa_templates([RECIPES / "generation" / "squad.yaml"], "generation")[0]
    b = QAPromptBuilder(tiny.tok, t)
    demos = sample_qa_demonstrations(train, 2, 0)
    with torch.no_grad():
        recs = generate_answers(tiny.model, tiny.tok, b, demos, dev[:3], max_new_tokens=5)
        for ex, r in zip(dev, recs):
            ids = b.full(demos, ex)
            new = []
            for _ in range(5):
                nxt = int(tiny.model(torch.tensor([ids + new])).logits[0, -1].argmax())
                if nxt == tiny.model.config.eos_token_id:
                    break
                new.append(nxt)
            text = tiny.tok.decode(new, skip_special_tokens=True)
            assert r["generated"] == text
            assert r["prediction"] == text.split("\n")[0].strip()
            assert r["exact_match"] == answer_scores(r["prediction"], ex.answers)["exact_match"]


def test_cli_multiple_choice_and_generation_with_chat(tiny, qa_data, tmp_path, capsys):  # noqa: F811
    from plmkit.cli.main import main

    out = tmp_path / "mc"
    assert main(["icl", "--model", str(tiny.dir / "model"), "--task", "multiple-choice", "--data",
                 str(qa_data / "multiple-choice"), "--template", str(RECIPES / "multiple-choice"), "--shots", "0,2",
                 "--seeds", "2", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["by_shots"]["2"]["runs"] == 4 and {"accuracy", "accuracy_std", "accuracy_min"} <= set(m["by_shots"]["2"])
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 5 * 2 * (1 + 2)
    acc = np.mean([p["correct"] for p in preds if p["shots"] == 0 and p["template"] == "question-answer"])
    assert m["by_template"]["question-answer"]["raw"]["0"]["accuracy"] == pytest.approx(acc)

    model = tmp_path / "chatmodel"
    shutil.copytree(tiny.dir / "model", model)
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    out = tmp_path / "gen"
    assert main(["icl", "--model", str(model), "--task", "generation", "--data", str(qa_data / "generation"),
                 "--template", str(RECIPES / "generation" / "squad.yaml"), "--shots", "1", "--seeds", "2",
                 "--chat", "--max-new-tokens", "3", "--precision", "bf16", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"exact_match", "f1", "f1_min"} <= set(m["by_shots"]["1"]) and m["scoring"]["chat"] is True
    assert m["precision"] == "bf16"  # greedy answers from the bf16 copy (float32 head)
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 10 and m["by_shots"]["1"]["f1"] == pytest.approx(np.mean([p["f1"] for p in preds]))


def test_squad_directory_is_read_as_generation_data_with_disjoint_articles(tmp_path):
    from plmkit.prompting.qa import read_qa_data

    arts = [{"title": f"a{i}", "paragraphs": [{"context": f"ctx {i} word", "qas": [
        {"id": f"q{i}", "question": f"what {i}?", "answers": [{"text": "word", "answer_start": len(f"ctx {i} ")}]}]}]}
        for i in range(40)]
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": arts}))
    train, dev = read_qa_data(tmp_path, "generation")
    assert len(train) == 36 and len(dev) == 4 and dev[0].question == "what 36?" and dev[0].answers == ["word"]


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "options": ["a", "b"], "answer": 2}', r"dev.jsonl:2: answer index 2 is out of range"),
    ('{"question": "q", "options": ["a", "b"], "answer": "c"}', r"dev.jsonl:2: answer 'c' is not one of"),
    ('{"question": "q", "options": ["a"], "answer": 0}', r"dev.jsonl:2: key 'options' must be a list of at least 2"),
    ('{"options": ["a", "b"], "answer": 0}', r"dev.jsonl:2: key 'question' must be"),
    ("not json", r"dev.jsonl:2: not valid JSON"),
])
def test_bad_multiple_choice_rows_one_line_exit_2(tiny, qa_data, tmp_path, capsys, line, message):  # noqa: F811
    from plmkit.cli.main import main

    d = tmp_path / "d"
    shutil.copytree(qa_data / "multiple-choice", d)
    first = (d / "dev.jsonl").read_text().splitlines()[0]
    (d / "dev.jsonl").write_text(first + "\n" + line + "\n")
    rc = main(["icl", "--model", str(tiny.dir / "model"), "--task", "multiple-choice", "--data", str(d),
               "--template", str(RECIPES / "multiple-choice"), "--shots", "0", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(message, err), err


@pytest.mark.parametrize("extra, message", [
    (["--calibrate"], "--calibrate applies to classification tasks"),
    (["--shots", "11"], "--shots 11 is more than the 10 training examples"),
    (["--template", "NOSLOT"], "has no input slot {question}"),
    (["--template", "VERB"], "unknown key 'verbalizer'.*no verbalizer"),
    (["--chat"], "--chat needs the model's chat template"),
])
def test_cli_refusals_one_line_exit_2(tiny, qa_data, tmp_path, capsys, extra, message):  # noqa: F811
    from plmkit.cli.main import main

    (tmp_path / "noslot.yaml").write_text('template: "Answer:"\n')
    (tmp_path / "verb.yaml").write_text('template: "{question}"\nverbalizer: {"0": " a"}\n')
    extra = [str(tmp_path / "noslot.yaml") if a == "NOSLOT" else str(tmp_path / "verb.yaml") if a == "VERB" else a
             for a in extra]
    argv = ["icl", "--model", str(tiny.dir / "model"), "--task", "multiple-choice", "--data",
            str(qa_data / "multiple-choice"), "--out", str(tmp_path / "o")]
    if "--template" not in extra:
        argv += ["--template", str(RECIPES / "multiple-choice")]
    rc = main(argv + extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(message, err), err


def test_template_parsing():
    t = parse_qa_template({"template": "{context} Q: {question} A:", "answer_prefix": ""}, "x.yaml", "generation")
    assert t.fill(QAExample("why", ["x"], "because")) == "because Q: why A:" and t.answer_prefix == ""
    with pytest.raises(UserError, match=r"slot \{text\} is unknown"):
        parse_qa_template({"template": "{text}"}, "x.yaml", "generation")
    with pytest.raises(UserError, match="is for task 'generation', not 'multiple-choice'"):
        load_qa_templates([RECIPES / "generation" / "squad.yaml"], "multiple-choice")
