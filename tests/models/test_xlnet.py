"""XLNet (plmkit.models.xlnet): two-stream attention over a permutation mask, target_mapping,
segment recurrence memory, and the plm objective on top. Parity: tests/interop/test_hf_xlnet.py."""

from __future__ import annotations

import pytest
import torch

from plmkit.errors import UserError
from plmkit.models import presets




def _model(**over):
    torch.manual_seed(0)
    return presets.build("xlnet-tiny", hidden_dropout=0.0, attention_dropout=0.0, **over).eval()


def _order_masks(order: list[int], T: int) -> torch.Tensor:
    """perm_mask (1, T, T) of a factorisation order: i may not attend j unless j comes earlier in the order."""
    rank = torch.empty(T, dtype=torch.long)
    rank[torch.tensor(order)] = torch.arange(T)
    return (rank[None, :] >= rank[:, None]).float()[None]  # 1 = may NOT attend (j not before i)


def test_query_stream_never_sees_its_own_token_and_follows_the_order():
    m = _model()
    T = 6
    order = [0, 3, 5, 1, 4, 2]  # position 0 first: every later query has something to attend to
    perm = _order_masks(order, T)
    tm = torch.eye(T)[None]  # predict every position
    ids = torch.randint(10, 1000, (1, T))
    with torch.no_grad():
        base = m(ids, perm_mask=perm, target_mapping=tm).last_hidden_state  # (1, T, H) query stream
    rank = {p: r for r, p in enumerate(order)}
    for j in range(T):
        changed = ids.clone()
        changed[0, j] = (ids[0, j] + 7) % 1000
        with torch.no_grad():
            out = m(changed, perm_mask=perm, target_mapping=tm).last_hidden_state
        for i in range(1, T):  # (the first position's query row is fully masked: uniform attention, as HF)
            same = torch.allclose(out[0, i], base[0, i], atol=1e-6)
            # position i's prediction depends on token j only if j precedes i in the factorisation order
            # (through any layer); in particular never on its own token
            assert same == (rank[j] >= rank[i]), (i, j)


def test_content_stream_sees_itself():
    m = _model()
    T = 5
    perm = _order_masks([0, 1, 2, 3, 4], T)  # left to right
    ids = torch.randint(10, 1000, (1, T))
    with torch.no_grad():
        h = m(ids, perm_mask=perm).last_hidden_state
        changed = ids.clone()
        changed[0, 2] += 1
        h2 = m(changed, perm_mask=perm).last_hidden_state
    torch.testing.assert_close(h[0, :2], h2[0, :2])
    assert not torch.allclose(h[0, 2], h2[0, 2])  # its own content


def test_target_mapping_selects_rows_and_logits_shape():
    m = _model()
    ids = torch.randint(10, 1000, (2, 7))
    perm = torch.zeros(2, 7, 7)
    perm[:, :, [2, 5]] = 1
    tm = torch.zeros(2, 2, 7)
    tm[:, 0, 2] = tm[:, 1, 5] = 1
    with torch.no_grad():
        out = m(ids, perm_mask=perm, target_mapping=tm)
        full = m(ids, perm_mask=perm, target_mapping=torch.eye(7)[None].expand(2, -1, -1))
    assert out.logits.shape == (2, 2, 1000)
    torch.testing.assert_close(out.last_hidden_state, full.last_hidden_state[:, [2, 5]], atol=1e-5, rtol=1e-5)


def test_memory_extends_the_context():
    m = _model(mem_len=4)
    a, b = torch.randint(10, 1000, (1, 6)), torch.randint(10, 1000, (1, 5))
    with torch.no_grad():
        first = m(a, use_mems=True)
        assert len(first.mems) == 2 and first.mems[0].shape == (1, 4, 64)
        with_mem = m(b, mems=first.mems).last_hidden_state
        without = m(b).last_hidden_state
        other = m(torch.randint(10, 1000, (1, 6)), use_mems=True)
        with_other = m(b, mems=other.mems).last_hidden_state
    assert not torch.allclose(with_mem, without)
    assert not torch.allclose(with_mem, with_other)


def test_plm_objective_trains_xlnet(objective_data):
    trained_tokenizer, wikitext_lines = objective_data.trained_tokenizer, objective_data.wikitext_lines
    from plmkit.objectives import build

    tok = trained_tokenizer("wordpiece", 2000)
    lines = [ln for ln in wikitext_lines() if len(ln) > 200][:48]
    examples = [tok.encode(ln)[:32] for ln in lines]
    torch.manual_seed(0)
    m = presets.build("xlnet-tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    obj = build("plm", tokenizer=tok)
    obj.prepare(m)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    losses = []
    try:
        for step in range(12):
            loss, _ = obj.loss(m, obj.make_batch(examples[(step % 3) * 16:(step % 3) * 16 + 16]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    finally:
        torch.set_num_threads(threads)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses


def test_bad_input():
    m = _model()
    with pytest.raises(UserError, match="perm_mask"):
        m(torch.randint(10, 1000, (1, 4)), perm_mask=torch.zeros(1, 3, 3))
    with pytest.raises(UserError, match="target_mapping"):
        m(torch.randint(10, 1000, (1, 4)), target_mapping=torch.zeros(1, 2, 5))
    with pytest.raises(UserError, match="does not take"):
        m(torch.randint(10, 1000, (1, 4)), position_ids=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="attn_type"):
        presets.build("xlnet-tiny", attn_type="both")
