"""Training tests run single-threaded: the models are tiny, and on a shared 2-core machine torch's
intra-op thread pool costs far more than it gains (0.2 s vs 8 ms per step measured)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
