"""ELMo.extend_vocabulary and plmkit.classic.elmo.save_elmo (checkpoint + word-level tokenizer)."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.classic.elmo import save_elmo
from plmkit.errors import UserError
from plmkit.classic.recurrent import ELMo, build

VOCAB = ["<eos>", "<pad>", "<unk>", "the", "movie", "was"]


def test_extend_vocabulary_keeps_old_outputs_and_spells_new_words():
    torch.manual_seed(0)
    model = build("elmo-tiny", vocab_size=len(VOCAB)).eval()
    model.set_vocabulary(VOCAB)
    ids = torch.tensor([[0, 3, 4, 5, 0]])
    with torch.no_grad():
        before = model(ids)
    model.extend_vocabulary(["great", "dull"])
    assert model.config.vocab_size == len(VOCAB) + 2 and model.output.out_features == len(VOCAB) + 2
    with torch.no_grad():
        after = model(ids)
        reps = model.layer_representations(torch.tensor([[0, 6, 7, 0]]))
    torch.testing.assert_close(after.last_hidden_state, before.last_hidden_state)
    torch.testing.assert_close(after.logits[..., : len(VOCAB)], before.logits)
    new_rows = after.logits[..., len(VOCAB):]  # zero weights, the smallest trained bias
    assert torch.equal(new_rows, model.output.bias[len(VOCAB):].expand_as(new_rows))
    assert float(model.output.bias[-1].detach()) == float(model.output.bias[: len(VOCAB)].min().detach())
    assert not torch.equal(reps[0][0, 1], reps[0][0, 2])  # "great" and "dull" spelled apart by the char-CNN


def test_save_elmo_roundtrip_and_tokenizer(tmp_path):
    torch.manual_seed(0)
    model = build("elmo-tiny", vocab_size=len(VOCAB))
    info = save_elmo(model, VOCAB, tmp_path / "e", extra_words=["great", "movie", "two words"])
    assert info == {"path": str(tmp_path / "e"), "vocab": len(VOCAB) + 1, "added_words": 1}
    loaded = plmkit.load(str(tmp_path / "e"))
    assert isinstance(loaded, ELMo) and loaded.config.vocab_size == len(VOCAB) + 1
    assert torch.equal(loaded.token_chars, model.token_chars)
    tok = plmkit.load_tokenizer(tmp_path / "e")
    ids = tok.encode("the great zzz")
    assert tok.convert_ids_to_tokens(ids) == ["<eos>", "the", "great", "<unk>", "<eos>"]
    assert tok.pad_token_id == 1 and tok.eos_token_id == 0


def test_save_elmo_bad_input(tmp_path):
    with pytest.raises(UserError, match="elmo"):
        save_elmo(build("lstm-tiny", vocab_size=6), VOCAB, tmp_path / "x")
    with pytest.raises(UserError, match="token strings"):
        save_elmo(build("elmo-tiny", vocab_size=7), VOCAB, tmp_path / "x")
    with pytest.raises(UserError, match="special tokens"):
        save_elmo(build("elmo-tiny", vocab_size=6), ["a", "b", "c", "d", "e", "<unk>"], tmp_path / "x")
