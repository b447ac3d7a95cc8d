"""canine_char: token ids -> code points, whole-word character masking, and CANINE trained through it."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.models.canine import CLS, MASK, SEP
from plmkit.objectives import build

TEXTS = ["The quick brown fox jumps over the lazy dog again and again.",
         "Zürich is a city; 北京是中国的首都。 Mixed text here.",
         "Pack my box with five dozen liquor jugs, said the sphinx of black quartz."]


@pytest.fixture(scope="module")
def chars():
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    return train_tokenizer_from_iterator(TEXTS * 3, kind="char", vocab_size=0)


def test_codepoints_and_whole_word_masking(chars):
    obj = build("canine_char", tokenizer=chars, rate=0.3)
    ids = chars.encode(TEXTS[1])
    cps = obj.codepoints(torch.tensor(ids)).tolist()
    assert cps[0] == CLS and cps[-1] == SEP and "".join(chr(c) for c in cps[1:-1]) == TEXTS[1]
    torch.manual_seed(0)
    for text in TEXTS:
        ids = chars.encode(text)
        masked, labels = obj.mask_example(ids)
        pos = [i for i, y in enumerate(labels) if y != -100]
        assert all(masked[i] == chars.mask_token_id and labels[i] == ids[i] for i in pos)
        assert all(masked[i] == ids[i] for i in range(len(ids)) if i not in pos)
        n_chars = sum(1 for c in text if not c.isspace())
        assert round(0.3 * n_chars) <= len(pos) <= round(0.3 * n_chars) + 12
        # whole words: a masked Latin char's word neighbours (no space between) are masked too
        for i in pos:
            ch = text[i - 1]
            for j in (i - 1, i + 1):
                if 1 <= j <= len(text) and not text[j - 1].isspace() and not obj.cjk_table[ids[j]] \
                        and not obj.cjk_table[ids[i]]:
                    assert j in pos, (text, ch)
    batch = obj.make_batch([chars.encode(t) for t in TEXTS])
    assert (batch["input_ids"][batch["labels"] != -100] == MASK).all()


def test_needs_canine(chars):
    with pytest.raises(UserError, match="CANINE"):
        build("canine_char", tokenizer=chars).prepare(plmkit.load("bert-tiny", vocab_size=len(chars)))


def test_canine_learns_characters(chars):
    torch.manual_seed(0)
    model = plmkit.load("canine-tiny", hidden_dropout=0.0, attention_dropout=0.0)
    obj = build("canine_char", tokenizer=chars, masking="char", rate=0.2)
    obj.prepare(model)
    data = [chars.encode(t) for t in TEXTS]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, m = obj.loss(model.train(), obj.make_batch(data))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
