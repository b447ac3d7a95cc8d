"""The knowledge / compression / prompting / analysis claims (``plmkit.reproduce.experiments.knowledge``).

Each runner runs end to end through ``run_claim`` on tiny random models and toy data (the real commands in
child processes, seconds), a rerun reuses its finished steps (the commands are made to fail on the rerun), and
the verdict follows the numbers: finished steps with numbers written by hand (the step files a run keeps) give
"held" one way round and "not held" the other.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.reproduce.context import STATE, ClaimContext, run_claim
from plmkit.reproduce.experiments import knowledge as K
from plmkit.reproduce.registry import Claim, load_claims

REPO = Path(__file__).resolve().parents[2]
SUBJECTS = ["Paris", "Berlin", "Rome", "Madrid", "Tokyo", "Alice Smith", "Bob Jones", "Carol Stone"]
OBJECTS = ["France", "Germany", "Italy", "Spain", "Japan", "French", "German", "English"]
TEXT = ([f"{s} is located in {o} ." for s, o in zip(SUBJECTS[:5], OBJECTS[:5])]
        + [f"the native language of {s} is {o} ." for s, o in zip(SUBJECTS[5:], OBJECTS[5:])]
        + ["the movie was good and the film was great", "a bad plot and an awful story",
           "Review: a fine film\nSentiment: positive", "Review: a poor movie\nSentiment: negative"]) * 10


def claim(runner: str, params: dict, tmp: Path) -> Claim:
    return Claim(id=f"t-{runner}", claim="a test claim", reference={"source": "test"}, runner=f"knowledge:{runner}",
                 budgets={"small": params}, path=tmp / "recipes" / "claims" / f"t-{runner}.yaml")


def run(c: Claim, out: Path, data: Path) -> dict:
    return run_claim(c, "small", out, data, log=lambda m: None)


def forbid_work(monkeypatch) -> None:
    """A rerun must take every result from its saved steps: any command or model load fails."""
    def boom(*a, **k):
        raise AssertionError("a finished step was recomputed")

    monkeypatch.setattr(ClaimContext, "plm", boom)
    monkeypatch.setattr(plmkit, "load", boom)
    import plmkit.knowledge.loading as loading

    monkeypatch.setattr(loading, "load_for_knowledge", boom)


def with_steps(c: Claim, out: Path, steps: dict) -> None:
    """An output folder holding this claim's finished steps (hand-written numbers)."""
    (out / "steps").mkdir(parents=True)
    (out / STATE).write_text(json.dumps({"id": c.id, "budget": "small", "params": c.budgets["small"]}))
    for name, result in steps.items():
        (out / "steps" / f"{name}.json").write_text(json.dumps({"step": name, "seconds": 0.0, "result": result}))


def check_shape(res: dict, c: Claim, out: Path) -> None:
    assert res["id"] == c.id and res["verdict"] in ("held", "not held", "inconclusive")
    assert res["rule"] and isinstance(res["ours"], dict) and res["ours"]
    assert res["table"]["columns"] and all(len(r) == len(res["table"]["columns"]) for r in res["table"]["rows"])
    saved = json.loads((out / "claim.json").read_text())
    assert saved["verdict"] == res["verdict"] and saved["ours"] == json.loads(json.dumps(res["ours"]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random LLaMA + byte-level BPE and a tiny BERT + WordPiece (HF directories), and toy data files."""
    from plmkit.tokenization import train_tokenizer_from_iterator

    d = tmp_path_factory.mktemp("claims")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bpe = train_tokenizer_from_iterator(TEXT, kind="bpe", vocab_size=400, min_frequency=1)
        torch.manual_seed(0)
        plmkit.load("llama-tiny", vocab_size=len(bpe), num_layers=4, bos_token_id=None, eos_token_id=None,
                    max_position_embeddings=256).save_pretrained(d / "llama")
        bpe.save(d / "llama")
        wp = train_tokenizer_from_iterator(TEXT, kind="wordpiece", vocab_size=150, min_frequency=1)
        torch.manual_seed(0)
        plmkit.load("bert-tiny", vocab_size=len(wp), pad_token_id=wp.pad_token_id, mask_token_id=wp.mask_token_id,
                    head=None).save_pretrained(d / "bert")
        wp.save(d / "bert")
    finally:
        torch.set_num_threads(n)
    data = d / "data"
    # LAMA: one T-REx relation of next-token facts
    (data / "lama" / "TREx").mkdir(parents=True)
    (data / "lama" / "relations.jsonl").write_text(json.dumps({"relation": "P17", "template": "[X] is located in [Y] ."}) + "\n")
    (data / "lama" / "TREx" / "P17.jsonl").write_text("".join(
        json.dumps({"uuid": f"u{i}", "sub_label": s, "obj_label": o, "predicate_id": "P17"}) + "\n"
        for i, (s, o) in enumerate(zip(SUBJECTS[:5], OBJECTS[:5]))))
    # facts for knowledge neurons: two relations
    facts = [{"id": f"f{i}", "prompts": [f"{s} is located in"], "target": o, "relation": "P17"}
             for i, (s, o) in enumerate(zip(SUBJECTS[:3], OBJECTS[:3]))]
    facts += [{"id": f"g{i}", "prompts": [f"the native language of {s} is"], "target": o, "relation": "P103"}
              for i, (s, o) in enumerate(zip(SUBJECTS[5:], OBJECTS[5:]))]
    (data / "facts.json").write_text(json.dumps(facts))
    # CounterFact (EasyEdit layout)
    cf = [{"case_id": i, "prompt": f"{s} is located in", "target_new": new, "subject": s, "ground_truth": true,
           "rephrase_prompt": f"the city {s} is located in", "locality_prompt": f"{o} is located in",
           "locality_ground_truth": true}
          for i, (s, new, true, o) in enumerate([("Paris", "Japan", "France", "Rome"),
                                                 ("Berlin", "Spain", "Germany", "Tokyo"),
                                                 ("Madrid", "France", "Spain", "Paris")])]
    (data / "cf.json").write_text(json.dumps(cf))
    (data / "corpus.txt").write_text("\n".join(TEXT) + "\n")
    # a sentiment task (SST-2 layout)
    rng = random.Random(0)
    (data / "sst").mkdir()
    for split, n_rows in (("train", 48), ("dev", 16)):
        rows = ["sentence\tlabel"]
        for _ in range(n_rows):
            y = rng.random() < 0.5
            words = rng.sample(["the", "movie", "film", "was", "a", "plot"], 3) + [
                rng.choice(["good", "great", "fine"] if y else ["bad", "awful", "poor"])]
            rng.shuffle(words)
            rows.append(f"{' '.join(words)}\t{int(y)}")
        (data / "sst" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return d


# ------------------------------------------------------------------------------------------ the claim files
def test_the_claim_files_load_and_name_runners_of_this_module():
    claims = load_claims(REPO / "recipes" / "claims")
    mine = {"distil-retention", "rome-vs-ft", "icl-shots", "lama-by-layer", "kn-suppression", "contextuality-by-layer"}
    assert mine <= set(claims)
    for cid in mine:
        c = claims[cid]
        assert c.runner.startswith("knowledge:") and c.function().is_claim_runner
        assert {"small", "full"} <= set(c.budgets)


def test_resolve_model_finds_the_gguf_inside_a_package_folder(tmp_path, monkeypatch):
    import plmkit.packages as packages

    (tmp_path / "m.gguf").write_bytes(b"")
    monkeypatch.setattr(packages, "package_dir", lambda name: str(tmp_path))
    assert K.resolve_model("pkg:anything") == str(tmp_path / "m.gguf")
    (tmp_path / "n.gguf").write_bytes(b"")
    with pytest.raises(UserError, match="several .gguf"):
        K.resolve_model("pkg:anything")
    (tmp_path / "config.json").write_text("{}")
    assert K.resolve_model("pkg:anything") == str(tmp_path)
    assert K.resolve_model("some/dir") == "some/dir"


def test_random_like_draws_as_many_neurons_per_layer_avoiding_the_given_ones():
    rng = random.Random(0)
    given = [[3, 1], [3, 2], [5, 0]]
    for _ in range(20):
        pick = K.random_like(given, 4, rng)
        assert sorted(layer for layer, _ in pick) == [3, 3, 5]
        assert not {tuple(p) for p in pick} & {tuple(g) for g in given}
        assert len({tuple(p) for p in pick}) == 3


# ------------------------------------------------------------------------------------------ contextuality
def test_contextuality_end_to_end_and_rerun(tiny, tmp_path, monkeypatch):
    params = {"model": str(tiny / "bert"), "corpus": "corpus.txt", "sentences": 40, "seeds": [0, 1],
              "min_occurrences": 3, "min_words": 3}
    c = claim("contextuality_by_layer", params, tmp_path)
    res = run(c, tmp_path / "out", tiny / "data")
    check_shape(res, c, tmp_path / "out")
    assert [r[0] for r in res["table"]["rows"]] == [0, 1, 2]  # bert-tiny: embeddings + 2 layers
    assert sorted(p.name for p in (tmp_path / "out" / "steps").iterdir()) == ["seed-0.json", "seed-1.json"]
    forbid_work(monkeypatch)
    again = run(c, tmp_path / "out", tiny / "data")
    assert again["ours"] == res["ours"] and again["verdict"] == res["verdict"]


@pytest.mark.parametrize("direction, verdict", [(-1, "held"), (+1, "not held")])
def test_contextuality_verdict_follows_the_numbers(tiny, tmp_path, direction, verdict):
    params = {"model": str(tiny / "bert"), "corpus": "corpus.txt", "sentences": 40, "seeds": [0, 1, 2]}
    c = claim("contextuality_by_layer", params, tmp_path)
    keys = ("self_similarity", "anisotropy", "intra_sentence", "mev")
    steps = {f"seed-{s}": [{"layer": la, "self_similarity_adjusted": 0.5 + direction * 0.1 * la + 0.01 * s,
                            **{k: 0.0 for k in keys}} for la in range(5)] for s in range(3)}
    out = tmp_path / "out"
    with_steps(c, out, steps)
    res = run(c, out, tiny / "data")
    assert res["verdict"] == verdict
    assert res["details"]["falls_at_every_contextual_layer"] == ("held" if direction < 0 else "not held")


# ------------------------------------------------------------------------------------------ LAMA by layer
def test_lama_by_layer_end_to_end_and_rerun(tiny, tmp_path, monkeypatch):
    params = {"model": str(tiny / "llama"), "data": "lama", "relations": "P17", "max_facts": 5}
    c = claim("lama_by_layer", params, tmp_path)
    res = run(c, tmp_path / "out", tiny / "data")
    check_shape(res, c, tmp_path / "out")
    assert res["details"]["n_states"] == 5  # embeddings + 4 blocks
    preds = [json.loads(x) for x in (tmp_path / "out" / "runs" / "lama" / "predictions.jsonl").read_text().splitlines()]
    layered = [p for p in preds if p.get("layer_ranks")]
    assert len(res["table"]["rows"]) == 5 and res["ours"]["facts with a layer readout"] == len(layered) >= 2
    # the top state is the model's own output: its rank is the fact's LAMA rank
    assert all(p["layer_ranks"][-1] == p["rank"] for p in layered)
    assert res["ours"]["P@1 at the top state"] == round(sum(p["rank"] == 1 for p in layered) / len(layered), 4)
    forbid_work(monkeypatch)
    assert run(c, tmp_path / "out", tiny / "data")["ours"] == res["ours"]


@pytest.mark.parametrize("falling, verdict", [(True, "held"), (False, "not held")])
def test_lama_verdict_follows_the_ranks(tiny, tmp_path, falling, verdict):
    c = claim("lama_by_layer", {"model": "x", "data": "lama", "relations": "P17", "max_facts": 5}, tmp_path)
    facts = []
    for i in range(8):
        ranks = [1000 - 120 * s + i for s in range(7)]
        facts.append({"relation": "P17", "subject": f"s{i}", "gold": "g",
                      "layer_ranks": ranks if falling else ranks[::-1]})
    with_steps(c, tmp_path / "out", {"probe": {"layers_p_at_1": None, "p_at_1": 0.0, "facts": facts}})
    res = run(c, tmp_path / "out", tiny / "data")
    assert res["verdict"] == verdict
    assert res["details"]["lower"] == [0, 1] and res["details"]["upper"] == [5, 6] and res["details"]["middle"] == 3


# ------------------------------------------------------------------------------------------ knowledge neurons
def test_kn_suppression_end_to_end_and_rerun(tiny, tmp_path, monkeypatch):
    params = {"model": str(tiny / "llama"), "facts": "facts.json", "n": 6, "layers": "2-3", "steps": 3,
              "random_draws": 2, "controls": 2}
    c = claim("kn_suppression", params, tmp_path)
    res = run(c, tmp_path / "out", tiny / "data")
    check_shape(res, c, tmp_path / "out")
    found = json.loads((tmp_path / "out" / "runs" / "neurons" / "neurons.json").read_text())
    assert len(found["facts"]) == 6 and found["layers"] == [2, 3]
    # suppressing a fact's own knowledge neurons is measured against P(correct) of the unedited model
    rows = json.loads((tmp_path / "out" / "steps" / "suppress.json").read_text())["result"]
    for r in rows:
        assert len(r["random_draws_pct"]) == 2 and len(r["p_before"]) == 1
    forbid_work(monkeypatch)
    assert run(c, tmp_path / "out", tiny / "data")["ours"] == res["ours"]


@pytest.mark.parametrize("kn_drop, verdict", [(-90.0, "held"), (-1.0, "not held")])
def test_kn_verdict_follows_the_numbers(tiny, tmp_path, kn_drop, verdict):
    c = claim("kn_suppression", {"model": "x", "facts": "facts.json", "n": 4}, tmp_path)
    rows = [{"id": f"f{i}", "target": "t", "n_neurons": 3, "own_change_pct": kn_drop + i,
             "random_change_pct": -45.0 - i, "random_draws_pct": [-45.0 - i], "control_change_pct": -40.0 + i,
             "p_before": [0.2]} for i in range(5)]
    with_steps(c, tmp_path / "out", {"find": {"facts": [{}] * 5, "layers": [1], "steps": 3}, "suppress": rows})
    res = run(c, tmp_path / "out", tiny / "data")
    assert res["verdict"] == verdict
    assert res["ours"]["knowledge neurons suppressed: own change %"]["mean"] == pytest.approx(kn_drop + 2)


# ------------------------------------------------------------------------------------------ ROME vs FT
def test_rome_vs_ft_end_to_end_tunes_the_bound_and_reruns(tiny, tmp_path, monkeypatch):
    hp = {"rome": {"n_context": 1, "context_length": 3, "v": {"steps": 4}},
          "ft": {"steps": 3}, "ft-l": {"steps": 3}}
    params = {"model": str(tiny / "llama"), "data": "cf.json", "n": 2, "tune_data": "cf.json", "tune_n": 1,
              "ftl_grid": [1e-4, 1e-2], "layers": 1, "stats_corpus": "corpus.txt", "stats_samples": 300,
              "fluency_tokens": 0, "hparams": hp}
    c = claim("rome_vs_ft", params, tmp_path)
    res = run(c, tmp_path / "out", tiny / "data")
    check_shape(res, c, tmp_path / "out")
    d = res["details"]
    assert set(d["ft_l_tuning_s"]) == {"0.0001", "0.01"} and d["ft_l_bound"] in (1e-4, 1e-2)
    best = max(d["ft_l_tuning_s"].values())
    assert d["ft_l_tuning_s"][f"{d['ft_l_bound']:g}"] == best
    assert d["case_ids"] == [0, 1]
    hp_used = (tmp_path / "out" / "hparams").iterdir()
    assert any(f"norm_constraint{d['ft_l_bound']}" in p.name for p in hp_used)
    forbid_work(monkeypatch)
    assert run(c, tmp_path / "out", tiny / "data")["ours"] == res["ours"]


@pytest.mark.parametrize("rome_score, verdict", [(1.0, "held"), (0.0, "not held")])
def test_rome_verdict_follows_the_cases(tiny, tmp_path, rome_score, verdict):
    params = {"model": "x", "data": "cf.json", "n": 6, "stats_corpus": "corpus.txt", "ftl_grid": [5e-4]}
    c = claim("rome_vs_ft", params, tmp_path)

    def arm(score: float, flip: int) -> dict:
        cases = [{"id": i, "es": score, "ps": score, "ns": float(i % 2 == flip), "score": None} for i in range(6)]
        for x in cases:
            x["score"] = (x["es"] + x["ps"] + x["ns"]) / 3
        s = {"es": score, "ps": score, "ns": 0.5, "s": score}
        return {"edited": s, "unedited": {"es": 0.3, "ps": 0.3, "ns": 0.5, "s": 0.35}, "cases": cases,
                "dir": "x", "seconds_per_edit": 1.0}

    with_steps(c, tmp_path / "out", {"rome": arm(rome_score, 0), "ft": arm(0.5, 1), "ft-l": arm(0.5, 0)})
    res = run(c, tmp_path / "out", tiny / "data")
    assert res["verdict"] == verdict
    assert res["ours"]["S ROME"] == rome_score


# ------------------------------------------------------------------------------------------ ICL
def test_icl_shots_end_to_end_and_rerun(tiny, tmp_path, monkeypatch):
    params = {"model": str(tiny / "llama"), "task": "sst2", "data": "sst",
              "templates": [str(REPO / "recipes" / "prompts" / "sst2" / "review.yaml")],
              "shots": [0, 2], "seeds": 2, "limit": 6}
    c = claim("icl_shots", params, tmp_path)
    res = run(c, tmp_path / "out", tiny / "data")
    check_shape(res, c, tmp_path / "out")
    runs = res["details"]["runs"]
    assert sorted((r["shots"], r["seed"]) for r in runs) == [(0, None), (2, 0), (2, 1)]
    assert res["ours"]["2-shot accuracy"]["n"] == 2
    forbid_work(monkeypatch)
    assert run(c, tmp_path / "out", tiny / "data")["ours"] == res["ours"]


def test_icl_shots_templates_resolve_against_the_recipes_folder(tiny, tmp_path):
    c = claim("icl_shots", {"model": "x", "data": "sst", "templates": ["nowhere/sst2"], "limit": 4}, tmp_path)
    with pytest.raises(UserError, match="nowhere/sst2 not found"):
        run(c, tmp_path / "out", tiny / "data")


@pytest.mark.parametrize("gain, verdict", [(0.2, "held"), (-0.2, "not held")])
def test_icl_verdict_follows_the_runs(tiny, tmp_path, gain, verdict):
    tpl = tmp_path / "recipes" / "t.yaml"
    tpl.parent.mkdir(parents=True)
    tpl.write_text("x")
    params = {"model": "x", "data": "sst", "templates": [str(tpl)], "shots": [0, 4], "seeds": 3, "limit": 4}
    c = claim("icl_shots", params, tmp_path)
    runs = [{"template": "t", "shots": 0, "seed": None, "raw": 0.6, "calibrated": 0.6}]
    runs += [{"template": "t", "shots": 4, "seed": s, "raw": 0.6 + gain + 0.01 * s, "calibrated": 0.6 + 2 * gain + 0.02 * s}
             for s in range(3)]
    with_steps(c, tmp_path / "out", {"icl-t": runs})
    res = run(c, tmp_path / "out", tiny / "data")
    assert res["verdict"] == verdict
    assert res["ours"]["4-shot accuracy"]["mean"] == pytest.approx(0.61 + gain)


# ------------------------------------------------------------------------------------------ distillation
def test_distil_retention_end_to_end_and_rerun(tiny, tmp_path, monkeypatch):
    params = {"task": "sst2", "data": "sst", "model": str(tiny / "bert"),
              "teacher": {"epochs": 2, "lr": 2e-3, "batch_size": 16, "max_seq_len": 16},
              "student_layers": 1, "student": {"epochs": 1, "lr": 2e-3, "batch_size": 16, "max_seq_len": 16},
              "seeds": [1, 2], "target_retention": 0.97}
    c = claim("distil_retention", params, tmp_path)
    res = run(c, tmp_path / "out", tiny / "data")
    check_shape(res, c, tmp_path / "out")
    teacher = json.loads((tmp_path / "out" / "runs" / "teacher" / "eval.json").read_text())
    assert res["ours"]["teacher accuracy"] == teacher["accuracy"]
    for s in (1, 2):
        ev = json.loads((tmp_path / "out" / "runs" / f"student-seed{s}" / "eval.json").read_text())
        assert ev["student_layers"] == 1 and ev["teacher_layers"] == 2
    assert res["ours"]["retention"]["values"] == pytest.approx(
        [v / teacher["accuracy"] for v in res["ours"]["student accuracy"]["values"]])
    forbid_work(monkeypatch)
    assert run(c, tmp_path / "out", tiny / "data")["ours"] == res["ours"]


@pytest.mark.parametrize("student, verdict", [(0.90, "held"), (0.70, "not held")])
def test_distil_verdict_follows_the_accuracies(tiny, tmp_path, student, verdict):
    params = {"data": "sst", "model": "x", "seeds": [1, 2, 3], "target_retention": 0.97}
    c = claim("distil_retention", params, tmp_path)
    steps = {"teacher": {"accuracy": 0.9, "dir": "x"}}
    steps |= {f"student-seed{s}": {"accuracy": student + 0.001 * s, "student_params": 6, "teacher_params": 10,
                                   "student_layers": 3, "teacher_layers": 6} for s in (1, 2, 3)}
    with_steps(c, tmp_path / "out", steps)
    res = run(c, tmp_path / "out", tiny / "data")
    assert res["verdict"] == verdict and res["ours"]["student / teacher parameters"] == 0.6
