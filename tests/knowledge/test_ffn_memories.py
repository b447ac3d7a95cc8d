"""FFN memories: running top-k triggers equal a brute-force search; value projection; CLI."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.cli.main import main
from plmkit.knowledge import ffn_memories as fm
from plmkit.knowledge.structure import intervene, locate


@pytest.mark.parametrize("name,tokname", [("gpt2", "bpe_tok"), ("llama", "bpe_tok"), ("bert", "wordpiece_tok")])
def test_triggers_equal_brute_force(name, tokname, request, text_lines):
    model, tok = request.getfixturevalue(name), request.getfixturevalue(tokname)
    s = locate(model)
    stream = fm.token_stream(tok, text_lines[:12])
    keys = {0: [1, 5, 9], 1: [0, 3]}
    tops = fm.top_triggers(s, stream, keys, k=4, context=8, batch_size=3)
    windows = stream[: (stream.numel() // 8) * 8].view(-1, 8)
    acts = {}
    with torch.no_grad(), intervene(s, "neurons", lambda i, a: acts.__setitem__(i, a.reshape(-1, a.shape[-1]))):
        model(windows)
    for layer, ids in keys.items():
        ref = acts[layer][:, ids].T.topk(4, dim=1)  # (K, 4) over every stream position
        torch.testing.assert_close(tops[layer].values, ref.values.float())
        got = acts[layer][tops[layer].index, :].gather(2, torch.tensor(ids)[:, None, None].expand(-1, 4, 1))
        torch.testing.assert_close(got.squeeze(-1), ref.values)  # the stored positions hold those values


def test_value_projection_is_the_models_readout(llama):
    s = locate(llama)
    ids, probs = fm.value_tokens(s, 1, [2, 7], k=5)
    v = s.down(1).weight[:, 7]
    with torch.no_grad():
        p = s.head(s.final_norm(v)).softmax(-1)
    assert ids[1].tolist() == p.topk(5).indices.tolist()
    torch.testing.assert_close(probs[1], p.topk(5).values)


def test_ffn_memories_cli(model_dirs, tmp_path, capsys, text_lines):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(text_lines))
    out = tmp_path / "mem"
    assert main(["probe", "ffn-memories", "--model", str(model_dirs["gpt2"]), "--layer", "all", "--corpus", str(corpus),
                 "--keys", "3", "--top-k", "5", "--context", "16", "--out", str(out)]) == 0
    res = json.loads((out / "memories.json").read_text())
    assert len(res["memories"]) == 2 * 3 and set(res["agreement_by_layer"]) == {"0", "1"}
    m = res["memories"][0]
    assert len(m["triggers"]) == 5 and len(m["value_top_tokens"]) == 10
    acts = [t["activation"] for t in m["triggers"]]
    assert acts == sorted(acts, reverse=True)
    text = (out / "memories.md").read_text()
    assert "fires on" in text and "value promotes" in text
    capsys.readouterr()
    assert main(["probe", "ffn-memories", "--model", str(model_dirs["gpt2"]), "--layer", "7", "--corpus", str(corpus),
                 "--out", str(out)]) == 2
    assert "layer 7 does not exist" in capsys.readouterr().err
