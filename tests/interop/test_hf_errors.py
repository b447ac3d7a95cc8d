"""Bad checkpoints give one clear line; absent heads are reported, never silently random."""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers", reason="builds HF checkpoints with transformers (plmkit[interop])")

import plmkit  # noqa: E402
from interop_cases import cases, make_inputs  # noqa: E402
from plmkit.cli.main import main as plm  # noqa: E402
from plmkit.errors import UserError  # noqa: E402

CASES = {c.name: c for c in cases()}


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    yield


@pytest.fixture
def bert_dir(tmp_path):
    torch.manual_seed(0)
    CASES["bert-pretraining"].build().save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


def _edit_weights(d, fn):
    sd = load_file(str(d / "model.safetensors"))
    fn(sd)
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})


def test_unknown_model_type(bert_dir):
    cfg = json.loads((bert_dir / "config.json").read_text())
    cfg["model_type"] = "berta"
    (bert_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"config.json: unknown model_type 'berta' \(did you mean 'bert'\?\)"):
        plmkit.load(bert_dir)


def test_missing_backbone_tensor_names_the_key(bert_dir):
    _edit_weights(bert_dir, lambda sd: sd.pop("bert.encoder.layer.1.attention.self.value.weight"))
    with pytest.raises(UserError, match=r"model.safetensors: missing tensor 'bert.encoder.layer.1.attention.self.value"
                                        r".weight' \(needed for 'layers.1.attn.qkv.weight'\)"):
        plmkit.load(bert_dir)


def test_misshaped_tensor_names_key_and_shapes(bert_dir):
    def shrink(sd):
        sd["bert.encoder.layer.0.intermediate.dense.weight"] = sd["bert.encoder.layer.0.intermediate.dense.weight"][:30]

    _edit_weights(bert_dir, shrink)
    with pytest.raises(UserError, match=r"tensor bert.encoder.layer.0.intermediate.dense.weight \(30, 32\) does not fit "
                                        r"'layers.0.mlp.up.weight': expected \(37, 32\)"):
        plmkit.load(bert_dir)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_needs_code_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    d = tmp_path / "bin"
    CASES["bert-model"].build().save_pretrained(d)
    (d / "model.safetensors").unlink()
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"embeddings.word_embeddings.weight": _Evil()}, f, protocol=2)
    with pytest.raises(UserError, match=r"pytorch_model.bin: refused: the pickle needs more than tensors"):
        plmkit.load(d)
    assert "this must never run" not in capsys.readouterr().out
    # through the CLI: exit 2 and exactly one line
    assert plm(["convert", str(d), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plm convert: error:") and "refused" in err[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_no_weights_and_bad_json(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert",\n  "hidden_size": 32,,}')
    with pytest.raises(UserError, match=r"config.json:2: invalid JSON"):
        plmkit.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(CASES["bert-model"].build().config.to_dict()))
    with pytest.raises(UserError, match="no weights found"):
        plmkit.load(tmp_path)


def test_checkpoint_without_promised_head_warns_and_keeps_random(tmp_path):
    """architectures says BertForMaskedLM but the MLM head tensors are gone: loaded with a warning."""
    torch.manual_seed(0)
    d = tmp_path / "mlm"
    transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                                         num_attention_heads=4, intermediate_size=37)).save_pretrained(d)
    _edit_weights(d, lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("cls.")])
    with pytest.warns(UserWarning, match=r"no weights for mlm \(5 tensors: head.decoder.bias, head.transform.dense.bias"):
        model = plmkit.load(d)
    assert model.config.head == "mlm"
    inputs = make_inputs(CASES["bert-model"])
    assert model(**inputs).logits.shape == (3, 11, 99)


def test_head_override_on_a_base_checkpoint_is_reported(tmp_path):
    """MiniLM-style BertModel (pooler only): asking for an MLM head adds a random one, with a warning."""
    torch.manual_seed(0)
    CASES["bert-model"].build().save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = plmkit.load(tmp_path)
    assert base.config.head is None and base.config.pooler
    with pytest.warns(UserWarning, match="no weights for mlm"):
        with_head = plmkit.load(tmp_path, head="mlm")
    inputs = make_inputs(CASES["bert-model"])
    with torch.no_grad():
        a, b = base(**inputs), with_head(**inputs)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state) and b.logits is not None


def test_unused_checkpoint_tensors_are_reported(bert_dir):
    _edit_weights(bert_dir, lambda sd: sd.__setitem__("bert.encoder.layer.9.extra.weight", torch.zeros(2)))
    with pytest.warns(UserWarning, match=r"1 tensors not used: bert.encoder.layer.9.extra.weight"):
        plmkit.load(bert_dir)


def test_unsupported_config_options_are_refused(tmp_path):
    torch.manual_seed(0)
    CASES["bert-model"].build().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["position_embedding_type"] = "relative_key"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="position_embedding_type 'relative_key'"):
        plmkit.load(tmp_path)


def test_save_pretrained_family_without_hf_equivalent(tmp_path):
    from plmkit.models import ModelConfig, from_config

    model = from_config(ModelConfig(family="mystery", vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                    intermediate_size=32))
    with pytest.raises(UserError, match="family 'mystery' has no Hugging Face equivalent"):
        model.save_pretrained(tmp_path / "x")


def test_hf_dir_convert_copies_tokenizer_and_keeps_other_files_on_save(tmp_path, bert_dir, capsys):
    (bert_dir / "tokenizer.json").write_text("{}")
    (bert_dir / "vocab.txt").write_text("[PAD]\n")
    out = tmp_path / "converted"
    assert plm(["convert", str(bert_dir), str(out)]) == 0
    assert "tokenizer: tokenizer.json, vocab.txt" in capsys.readouterr().out
    assert (out / "vocab.txt").read_text() == "[PAD]\n"
    model = plmkit.load(out)
    assert sorted(model.heads) == ["nsp"]
    # save_pretrained into a directory with a tokenizer keeps it, and drops stale weight files
    torch.save({}, out / "pytorch_model.bin")
    model.save_pretrained(out)
    assert (out / "tokenizer.json").exists() and not (out / "pytorch_model.bin").exists()
