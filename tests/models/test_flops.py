"""models/flops.py against torch.utils.flop_counter (an independent count of the products actually run)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from plmkit.models import from_config
from plmkit.models.flops import forward_flops, generation_flops
from plmkit.models.presets import preset_config


def _linear_pointwise_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    rows = 1
    for n in x_shape[:-1]:
        rows *= n
    return 2 * rows * w_shape[0] * w_shape[1]


def _sdpa_cpu_flop(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, tq, d = q_shape
    return 4 * b * h * tq * k_shape[2] * d  # Q K^T and P V


# plmkit's CPU linear runs oneDNN's fused op, which the counter does not know: give it the GEMM formula
CUSTOM = {torch.ops.mkldnn._linear_pointwise: _linear_pointwise_flop,
          torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop}


def _counted(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=CUSTOM) as fc:
        fn()
    return fc.get_total_flops()


@pytest.mark.parametrize("name", ["bert-tiny", "albert-tiny", "gpt2-tiny", "llama-tiny"])
def test_forward_matches_flop_counter(name):
    torch.manual_seed(0)
    config = preset_config(name)
    model = from_config(config).eval()
    B, T = 2, 12
    ids = torch.randint(5, config.vocab_size, (B, T))
    with torch.no_grad():
        got = _counted(lambda: model(ids))
    assert forward_flops(config, B, T).total == got


def test_mlm_head_only_at_labelled_positions():
    torch.manual_seed(0)
    config = preset_config("bert-tiny")
    model = from_config(config).eval()
    ids = torch.randint(5, config.vocab_size, (3, 10))
    sel = torch.zeros(3, 10, dtype=torch.bool)
    sel[0, 1] = sel[1, 4] = sel[2, 0] = sel[2, 9] = True
    with torch.no_grad():
        got = _counted(lambda: model(ids, labels_mask=sel))
    count = forward_flops(config, 3, 10, head_positions=4)
    assert count.total == got
    assert count.head == 4 * (2 * 64 * 64 + 2 * 64 * 1000) + 3 * 2 * 64 * 64  # head at 4 positions, pooler per row


def test_training_is_three_forwards():
    torch.manual_seed(0)
    config = preset_config("gpt2-tiny")
    model = from_config(config)
    ids = torch.randint(5, config.vocab_size, (2, 8))
    got = _counted(lambda: model(ids).logits.sum().backward())
    # two backward products per forward product (input and weight gradients; the first block's input
    # gradient is needed too, for the embedding tables): 3x the forward
    assert forward_flops(config, 2, 8).training() == pytest.approx(got, rel=1e-9)


def test_generation_with_cache():
    torch.manual_seed(0)
    config = preset_config("llama-tiny")
    model = from_config(config).eval()
    prompt = torch.randint(5, config.vocab_size, (2, 6))
    with torch.no_grad():
        got = _counted(lambda: model.generate(prompt, max_new_tokens=5, eos_token_id=[]))
    assert generation_flops(config, 2, 6, 5) == got
