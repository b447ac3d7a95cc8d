"""UniLM mask modes and GLM (2D positions, blank-infilling mask) on the shared Transformer:
the masks are proved by what outputs do / do not change when other tokens change."""

from __future__ import annotations

import pytest
import torch

from plmkit.errors import UserError
from plmkit.models import presets
from plmkit.models.prefix_lm import glm_mask, unilm_mask




def _unilm():
    torch.manual_seed(0)
    return presets.build("unilm-tiny", hidden_dropout=0.0, attention_dropout=0.0).eval()


def _run(m, ids, mask, **kw):
    with torch.no_grad():
        return m(ids, attention_mask=mask, **kw).last_hidden_state


def test_unilm_seq2seq_source_ignores_target_and_target_is_causal():
    m = _unilm()
    T, S = 10, 4
    ids = torch.randint(5, 1000, (1, T))
    am = torch.ones(1, T, dtype=torch.long)
    mask = unilm_mask(torch.tensor([3]), torch.tensor([S]), am)
    h = _run(m, ids, mask)
    changed = ids.clone()
    changed[0, 7:] = torch.randint(5, 1000, (3,))  # change later target tokens
    h2 = _run(m, changed, mask)
    torch.testing.assert_close(h[0, :7], h2[0, :7])  # source and earlier target: unchanged
    assert not torch.allclose(h[0, 7:], h2[0, 7:])
    src_changed = ids.clone()
    src_changed[0, 3] = (ids[0, 3] + 1) % 1000
    h3 = _run(m, src_changed, mask)
    assert not torch.allclose(h[0, :S], h3[0, :S]) and not torch.allclose(h[0, S:], h3[0, S:])
    # the source is bidirectional: source position 0 sees source position 3
    assert not torch.allclose(h[0, 0], h3[0, 0])


@pytest.mark.parametrize("kind,visible", [(0, lambda i, j: True), (1, lambda i, j: j <= i),
                                          (2, lambda i, j: j >= i)])
def test_unilm_directional_modes(kind, visible):
    m = _unilm()
    T = 6
    ids = torch.randint(5, 1000, (1, T))
    mask = unilm_mask(torch.tensor([kind]), None, torch.ones(1, T))
    assert mask[0].tolist() == [[visible(i, j) for j in range(T)] for i in range(T)]
    h = _run(m, ids, mask)
    for j in range(T):
        changed = ids.clone()
        changed[0, j] = (ids[0, j] + 1) % 1000
        h2 = _run(m, changed, mask)
        for i in range(T):
            same = torch.allclose(h[0, i], h2[0, i])
            assert same == (not visible(i, j) and i != j), (kind, i, j)


def test_unilm_modes_mix_per_example_and_padding_is_invisible():
    m = _unilm()
    T = 8
    ids = torch.randint(5, 1000, (4, T))
    am = torch.ones(4, T, dtype=torch.long)
    am[2, 6:] = 0
    kinds = torch.tensor([0, 1, 2, 3])
    src = torch.tensor([0, 0, 0, 3])
    mask = unilm_mask(kinds, src, am)
    batched = _run(m, ids, mask)
    for b in range(4):
        alone = _run(m, ids[b:b + 1], unilm_mask(kinds[b:b + 1], src[b:b + 1], am[b:b + 1]))
        torch.testing.assert_close(batched[b], alone[0], atol=1e-5, rtol=1e-5)
    assert not mask[2, :6, 6:].any()  # real tokens never see padding
    pad_changed = ids.clone()
    pad_changed[2, 6:] = 9
    torch.testing.assert_close(_run(m, pad_changed, mask)[2, :6], batched[2, :6])


def test_glm_part_a_never_sees_part_b_and_part_b_is_causal():
    torch.manual_seed(0)
    m = presets.build("glm-tiny", hidden_dropout=0.0, attention_dropout=0.0).eval()
    T, A = 10, 6
    ids = torch.randint(5, 1000, (1, T))
    pos = torch.zeros(1, 2, T, dtype=torch.long)
    pos[0, 0, :A] = torch.arange(A)
    pos[0, 0, A:] = 2  # Part B tokens sit at their span's mask position in Part A
    pos[0, 1, A:] = torch.arange(1, T - A + 1)
    mask = glm_mask(torch.tensor([A]), torch.tensor([T]), T)
    with torch.no_grad():
        out = m(ids, attention_mask=mask, position_ids=pos)
    assert out.logits.shape == (1, T, 1000)
    h = out.last_hidden_state
    changed = ids.clone()
    changed[0, 8:] = torch.randint(5, 1000, (2,))
    with torch.no_grad():
        h2 = m(changed, attention_mask=mask, position_ids=pos).last_hidden_state
    torch.testing.assert_close(h[0, :8], h2[0, :8])  # Part A and earlier Part B unchanged
    assert not torch.allclose(h[0, 8:], h2[0, 8:])
    changed_b = ids.clone()
    changed_b[0, A] = (ids[0, A] + 1) % 1000  # the first Part B token
    with torch.no_grad():
        h3 = m(changed_b, attention_mask=mask, position_ids=pos).last_hidden_state
    torch.testing.assert_close(h[0, :A], h3[0, :A])  # Part A never sees Part B
    # the span position (row 1) matters: the block-position table is used
    pos2 = pos.clone()
    pos2[0, 1, A:] += 1
    with torch.no_grad():
        h4 = m(ids, attention_mask=mask, position_ids=pos2).last_hidden_state
    torch.testing.assert_close(h[0, :A], h4[0, :A])
    assert not torch.allclose(h[0, A:], h4[0, A:])


def test_glm_and_unilm_objectives_train_their_backbones(objective_data):
    """The glm / unilm objectives (plmkit.objectives) accept these backbones and their loss falls."""
    trained_tokenizer, wikitext_lines = objective_data.trained_tokenizer, objective_data.wikitext_lines
    from plmkit.objectives import build

    tok = trained_tokenizer("wordpiece", 2000)
    lines = [ln for ln in wikitext_lines() if len(ln) > 200][:64]
    examples = [tok.encode(ln)[:40] for ln in lines]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend on a shared machine
    try:
        _train_objectives(tok, examples, build)
    finally:
        torch.set_num_threads(threads)


def _train_objectives(tok, examples, build) -> None:
    for name, preset in (("glm", "glm-tiny"), ("unilm", "unilm-tiny")):
        torch.manual_seed(0)
        m = presets.build(preset, vocab_size=len(tok), mask_token_id=tok.mask_token_id,
                              pad_token_id=tok.pad_token_id)
        obj = build(name, tokenizer=tok)
        obj.prepare(m)
        opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
        losses = []
        for step in range(12):
            batch = obj.make_batch(examples[(step % 4) * 16:(step % 4) * 16 + 16])
            loss, _ = obj.loss(m, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, (name, losses)


def test_bad_masks_raise():
    with pytest.raises(UserError, match="lm_type"):
        unilm_mask(torch.tensor([5]), None, torch.ones(1, 4))
    with pytest.raises(UserError, match="source_len"):
        unilm_mask(torch.tensor([3]), None, torch.ones(1, 4))
    m = presets.build("glm-tiny")
    with pytest.raises(UserError, match="position_ids"):
        m(torch.randint(5, 1000, (1, 4)), position_ids=torch.zeros(1, 3, 4, dtype=torch.long))
