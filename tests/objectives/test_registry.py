"""Registry, build / build_many, and objectives driven by the shared Trainer (incl. a checkpoint of rtd's
shared generator embeddings and an exact resume)."""

from __future__ import annotations


import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import REGISTRY, build, build_many

from objective_fixtures import windows

ALL = ["clm", "mlm", "nsp", "sop", "rtd", "infoword", "tlm", "unilm", "t5_span", "bart_denoise", "mass", "plm", "glm",
       "bilm"]
ALL += ["colake"]  # reads its own files (T-REx facts): read_examples instead of a token-store view
ALL += ["spanbert", "structbert_wso", "structbert_sso"]  # issue 27
ALL += ["prophetnet", "cap_pred", "sent_reorder", "sent_distance", "ernie2", "canine_char"]  # issue 22
ALL += ["translation"]  # CoVe's MT-LSTM
ALL += ["realm", "ernie_thu", "kepler"]
ALL += ["ict"]  # REALM's retriever warm-up (issue 22)
# objectives that read a file named in their options (corpus / triples): built in their own tests
NEEDS_FILE = {"realm": "corpus", "ernie_thu": "triples", "kepler": "triples"}
ALL += ["distill_mlm"]  # general distillation (issue 20): needs its teacher checkpoint
NEEDS_FILE["distill_mlm"] = "teacher"
ALL += ["seq_autoencoder"]  # Dai & Le 2015


def test_registry_is_complete(tok):
    assert sorted(REGISTRY) == sorted(ALL)
    for name in ALL:
        if name in NEEDS_FILE:
            with pytest.raises(UserError, match=f"option {NEEDS_FILE[name]} is required"):
                build(name, tokenizer=tok)
            continue
        obj = build(name, tokenizer=tok)
        assert obj.name == name
        assert obj.example_kind in ("window", "document", "sentence_pair", "parallel") or (
            callable(getattr(obj, "read_examples", None)))


def test_build_errors(tok):
    with pytest.raises(UserError, match=r"unknown objective 'mlmm'.*did you mean 'mlm'"):
        build("mlmm", tokenizer=tok)
    with pytest.raises(UserError, match="tokenizer"):
        build("mlm")
    with pytest.raises(UserError, match="weight"):
        build_many([{"name": "mlm", "weight": -1}], tokenizer=tok)
    with pytest.raises(UserError, match="unique"):
        build_many([{"name": "mlm"}, {"name": "mlm"}], tokenizer=tok)


def test_build_many_weights_and_views(tok, wiki_ids):
    model = plmkit.load("bert-tiny", vocab_size=len(tok))
    multi = build_many([{"name": "mlm", "weight": 1.0}, {"name": "sop", "weight": 0.5}], tokenizer=tok)
    multi.prepare(model)
    assert multi.example_kind == {"mlm": "window", "sop": "sentence_pair"}
    exs = [ids[:30] for ids in wiki_ids[:40] if len(ids) > 10][:8]
    batch = multi.make_batch({"mlm": exs, "sop": exs})
    torch.manual_seed(0)
    loss, m = multi.loss(model, batch)
    assert abs(loss.item() - (m["mlm/loss"] + 0.5 * m["sop/loss"])) < 1e-5
    with pytest.raises(UserError, match="no examples given for objective 'sop'"):
        multi.make_batch({"mlm": exs})


def test_trainer_runs_checkpoints_and_resumes_rtd(tok, wiki_ids, tmp_path):
    from plmkit.training import TrainConfig, Trainer

    data = windows(wiki_ids, tok, T=30, n=32)

    def run(out, steps, resume):
        torch.manual_seed(0)
        model = plmkit.load("electra-tiny", vocab_size=len(tok))
        obj = build("rtd", tokenizer=tok)
        obj.prepare(model)
        cfg = TrainConfig(max_steps=steps, batch_size=4, lr=1e-3, schedule="constant", save_every=2, log_every=1, tensorboard=False,
                          plots=False, progress=False, device="cpu", seed=3)
        tr = Trainer(model, obj, data, cfg, out_dir=out)
        tr.fit(resume=resume)
        return model

    a = run(tmp_path / "a", 4, False)
    run(tmp_path / "b", 2, False)
    b = run(tmp_path / "b", 4, True)
    for (n1, p1), (n2, p2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1  # bit-identical after resume (masks + generator sampling)
    assert b.heads["rtd_generator"].get_input_embeddings() is b.get_input_embeddings()
