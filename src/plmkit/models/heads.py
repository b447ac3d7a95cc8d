"""Output heads: LM (tied decoder), MLM (transform + decoder), pooler, NSP/SOP, ELECTRA RTD; ELMo's ScalarMix.

The backbone owns ``head`` (LM or MLM, chosen by ``config.head``) and ``pooler``; pretraining
objectives and fine-tuning tasks attach the others with ``model.add_head(name, module)``
(they then live in ``model.heads``). Heads return logits; losses belong to objectives.

``MLMHead`` is applied by the model only to the rows selected by ``labels_mask``, so on CPU the
(N, V) logits cost ~15% of the full (B, T, V) ones (the main MLM training speed-up).

References: Devlin et al. 2019 (BERT MLM head with transform, NSP, pooler); Lan et al. 2020
(ALBERT SOP); Clark et al. 2020 (ELECTRA discriminator head); Radford et al. 2019 (tied LM head).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plmkit.models.config import ModelConfig
from plmkit.models.kernels import ACTIVATIONS, Dropout, linear


def masked_mean(h: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``h`` (B, T, H) over the positions where ``mask`` (B, T) is 1 (all of them when None) -> (B, H);
    a row without any real position gives zeros."""
    if mask is None:
        return h.mean(1)
    m = mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def _masked_standardize(h: Tensor, mask: Tensor | None) -> Tensor:
    """``(h - mean) / std`` with one mean and variance over all entries of ``h`` (B, T, H) at real positions."""
    m = torch.ones(h.shape[:2], dtype=h.dtype, device=h.device) if mask is None else mask.to(h.dtype)
    n = m.sum().clamp_min(1) * h.shape[-1]
    mean = (h * m[..., None]).sum() / n
    var = (((h - mean) * m[..., None]) ** 2).sum() / n
    return (h - mean) / torch.sqrt(var + 1e-12)


class ScalarMix(nn.Module):
    """ELMo's task-specific layer mix (Peters et al. 2018, eq. 1): ``gamma * sum_j softmax(w)_j * h_j`` over the
    L+1 hidden states (embeddings + every layer) of a Transformer or an ELMo biLM.

    ``layer_norm=True`` is AllenNLP's option: each state is normalised by the mean and variance of all its
    entries at real (``mask``) positions before the mix.

    ``standardize()`` adds a per-layer, per-dimension shift and log-scale applied before the mix,
    ``h_j <- (h_j - shift_j) * exp(log_scale_j)``, initialised from the first training batch so that
    every dimension of every layer has zero mean and unit variance over its real tokens, then
    trained with the head (data-dependent initialisation as ActNorm, Kingma & Dhariwal 2018).
    Backbones whose layers are not normalised (ELMo's char-CNN and LSTM states) need it: their
    dimensions share large constant offsets, so mean-pooled features differ between sentences by a
    few percent of their norm and the head barely learns from them (issue #9). The parameters
    start as the identity (shift 0, log-scale 0) and are saved with the head; a head loaded from a
    checkpoint is not re-initialised.
    """

    def __init__(self, num_states: int, layer_norm: bool = False, initial_weights: list[float] | None = None):
        super().__init__()
        init = [0.0] * num_states if initial_weights is None else list(initial_weights)
        if len(init) != num_states:
            raise ValueError(f"ScalarMix: {len(init)} initial weights for {num_states} states")
        self.weights = nn.Parameter(torch.tensor(init, dtype=torch.float32))  # s_j before the softmax
        self.layer_norm = layer_norm
        self.gamma = nn.Parameter(torch.ones(()))
        self.shift: nn.ParameterList | None = None
        self.log_scale: nn.ParameterList | None = None
        self.initialized = True

    def standardize(self, hidden_size: int) -> "ScalarMix":
        """Add the per-layer standardisation (see the class docstring); a no-op when already there."""
        if self.shift is None:
            L = self.weights.numel()
            dev = self.weights.device
            # 1-D parameters: the optimizer exempts them from weight decay, as LayerNorm's
            self.shift = nn.ParameterList(nn.Parameter(torch.zeros(hidden_size, device=dev)) for _ in range(L))
            self.log_scale = nn.ParameterList(nn.Parameter(torch.zeros(hidden_size, device=dev)) for _ in range(L))
            self.initialized = False
        return self

    @torch.no_grad()
    def _init_from(self, hidden_states, mask: torch.Tensor | None) -> None:
        for j, h in enumerate(hidden_states):
            x = h.reshape(-1, h.shape[-1]).float()  # (B*T, H)
            if mask is not None:
                x = x[mask.reshape(-1).bool()]
            if len(x) < 2:
                return  # not enough tokens to estimate a variance; try the next batch
            self.shift[j].copy_(x.mean(0))
            self.log_scale[j].copy_(-0.5 * torch.log(x.var(0) + 1e-6))
        self.initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.shift is not None and f"{prefix}shift.0" in state_dict:
            self.initialized = True  # trained statistics came with the checkpoint

    def forward(self, hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden_states: L+1 tensors (B, T, H); mask (B, T) 1 = real token (for the statistics)."""
        if len(hidden_states) != self.weights.numel():
            raise ValueError(f"ScalarMix built for {self.weights.numel()} states, got {len(hidden_states)}")
        states = list(hidden_states)
        if self.shift is not None:
            if not self.initialized and self.training:
                self._init_from(states, mask)
            states = [(h - b) * torch.exp(s) for h, b, s in zip(states, self.shift, self.log_scale)]
        if self.layer_norm:
            states = [_masked_standardize(h, mask) for h in states]
        w = torch.softmax(self.weights, dim=0)
        stacked = torch.stack(states, dim=0)  # (L+1, B, T, H)
        return self.gamma * torch.einsum("l,lbth->bth", w, stacked)


class HeadTransform(nn.Module):
    """dense(H -> E) -> activation -> LayerNorm(E): BERT's ``cls.predictions.transform``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embed_dim)
        self.activation = "gelu" if config.activation == "swiglu" else config.activation
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(linear(x, self.dense, self.activation))


class MLMHead(nn.Module):
    """Masked-LM head: ``transform`` then ``decoder`` Linear(E, V) with bias (tied weight)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.transform = HeadTransform(config)
        self.decoder = nn.Linear(config.embed_dim, config.vocab_size, bias=True)

    def forward(self, hidden: Tensor) -> Tensor:
        return linear(self.transform(hidden), self.decoder)  # (..., V)


class LMHead(nn.Module):
    """Causal-LM head: ``decoder`` Linear(H, V) without bias (tied to the input embeddings)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        return linear(hidden, self.decoder)  # (..., V)


class Pooler(nn.Module):
    """BERT pooler: tanh(dense(h[:, 0])) -> (B, H)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(linear(hidden[:, 0], self.dense))


class SentencePairHead(nn.Module):
    """NSP (BERT) / SOP (ALBERT) classifier: dropout -> Linear(H, num_classes) on the pooled output.

    Input: the pooled (B, H) vector (``out.pooled``; for models without a pooler pass
    ``last_hidden_state[:, 0]``). Output: (B, num_classes) logits.
    """

    def __init__(self, hidden_size: int, num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.classifier(self.dropout(pooled))


class DiscriminatorHead(nn.Module):
    """ELECTRA replaced-token-detection head: dense(H, H) -> act -> prediction(H, 1).

    Input (B, T, H) or (N, H); output (B, T) / (N,) logits, > 0 meaning "replaced".
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        act = "gelu" if config.activation == "swiglu" else config.activation
        self.act = ACTIVATIONS[act]
        self.prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.prediction(self.act(self.dense(hidden))).squeeze(-1)


def build_head(config: ModelConfig) -> nn.Module | None:
    """The backbone head selected by ``config.head``."""
    if config.head == "mlm":
        return MLMHead(config)
    if config.head == "lm":
        return LMHead(config)
    return None


# ---------------------------------------------------------------------------- memory-lean LM loss
class _LinearCrossEntropy(torch.autograd.Function):
    """Summed CE of ``hidden @ weight.T + bias`` against ``labels`` (and the number of argmax hits)
    without keeping (N, V) logits.

    Forward walks over row chunks, and for each chunk computes the logits, the loss and already the
    gradients w.r.t. hidden / weight / bias (softmax - onehot); backward only scales them. Peak
    memory is one (chunk, V) block instead of the (N, V) logits + their softmax + their gradient
    (the "fused linear cross-entropy" of Liger-Kernel, Hsu et al. 2024; Wijmans et al. 2024).
    The block is kept transposed, (V, chunk): on CPU the GEMM ``weight @ hidden.T`` runs ~1.45x faster
    than ``hidden @ weight.T`` for a large V and a small E (bench: 87 vs 59 GFLOP/s per thread at
    V=50257, E=256), the softmax over V becomes reductions over rows of contiguous (chunk,) vectors,
    and both gradient GEMMs read the block in place. The ignore mask is applied to the small (chunk, E)
    operands instead of the block.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size: int, ignore_index: int):
        autocast = hidden.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        dtype = torch.get_autocast_dtype("cpu") if autocast else hidden.dtype
        needs = ctx.needs_input_grad
        valid = labels != ignore_index
        h_c, w_c = hidden.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(hidden) if needs[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs[1] else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) \
            if bias is not None and needs[2] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        # two (V, chunk) work buffers reused by every chunk: large fresh allocations are mmap'ed and
        # page-faulted in each time, which costs as much as a GEMM pass on CPU
        rows = min(chunk_size, hidden.shape[0])
        buf_t = torch.empty(weight.shape[0], rows, dtype=dtype, device=hidden.device)
        buf_p = buf_t if dtype == torch.float32 else torch.empty(
            weight.shape[0], rows, dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], chunk_size):
                h = h_c[s: s + chunk_size]
                c = h.shape[0]
                lt = buf_t[:, :c] if c == rows else buf_t.view(-1)[: weight.shape[0] * c].view(-1, c)
                torch.mm(w_c, h.t(), out=lt)  # (V, c) logits, transposed
                if bias is not None:
                    lt += bias.to(dtype)[:, None]
                p = lt if dtype == torch.float32 else (
                    buf_p.view(-1)[: weight.shape[0] * c].view(-1, c).copy_(lt))  # fp32 for the softmax
                ok = valid[s: s + chunk_size]
                y = torch.where(ok, labels[s: s + chunk_size], torch.zeros_like(labels[s: s + chunk_size]))
                cols = torch.arange(c, device=p.device)
                picked = p[y, cols]  # (c,) logit of the target
                m = p.amax(dim=0)  # (c,); max with indices along dim 0 is >10x slower on CPU than amax
                correct += ((picked >= m) & ok).sum()  # a hit: the target's logit is the largest (ties count)
                p.sub_(m).exp_()
                z = p.sum(dim=0)  # (c,)
                total -= ((picked - m - z.log()) * ok).sum()
                if grad_h is None and grad_w is None and grad_b is None:
                    continue
                p.mul_(z.reciprocal())  # softmax over V, in place
                p[y, cols] -= 1.0  # d CE / d logits (transposed)
                scale = ok.to(torch.float32)[:, None]  # (c, 1): the sum over valid rows
                g = p if dtype == torch.float32 else lt.copy_(p)  # back to the compute dtype for the GEMMs
                if grad_h is not None:
                    grad_h[s: s + chunk_size] = ((g.t() @ w_c).float() * scale).to(hidden.dtype)
                if grad_w is not None:  # fp32 accumulation over chunks
                    if dtype == torch.float32:
                        grad_w.addmm_(g, h * scale)
                    else:
                        grad_w += (g @ (h.float() * scale).to(dtype)).float()
                if grad_b is not None:
                    grad_b += (g @ scale.to(dtype)).float().squeeze(1)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return total, correct

    @staticmethod
    def backward(ctx, grad_out, _grad_correct=None):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        return (grad_h * grad_out if grad_h is not None else None,
                (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None,
                grad_b * grad_out if grad_b is not None else None, None, None, None)


def linear_cross_entropy(hidden: Tensor, decoder: nn.Linear, labels: Tensor, chunk_size: int = 256,
                         ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy of ``decoder(hidden)`` vs ``labels`` without materialising all logits.

    Args:
        hidden: (N, E) inputs of the output layer (e.g. ``last_hidden_state`` rows, or the MLM
            transform's output).
        decoder: the output ``nn.Linear`` (``model.head.decoder``; tied weights get their gradient
            added to the embeddings as usual).
        labels: (N,) target ids, ``ignore_index`` where nothing is predicted.
        chunk_size: rows per chunk (peak extra memory ~ chunk_size * V floats).
    Returns:
        scalar mean loss over the non-ignored rows (0 when there are none).
    """
    total, _ = linear_cross_entropy_sum(hidden, decoder, labels, chunk_size, ignore_index)
    return total / (labels != ignore_index).sum().clamp(min=1)


def linear_cross_entropy_sum(hidden: Tensor, decoder: nn.Linear, labels: Tensor, chunk_size: int = 256,
                             ignore_index: int = -100) -> tuple[Tensor, Tensor]:
    """(summed cross-entropy, number of argmax hits) over the non-ignored rows; see ``linear_cross_entropy``."""
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (N, E) and labels (N,), got {tuple(hidden.shape)} and {tuple(labels.shape)}")
    return _LinearCrossEntropy.apply(hidden, decoder.weight, decoder.bias, labels, chunk_size, ignore_index)


def fused_lm_head(model: nn.Module) -> nn.Linear | None:
    """The plain ``nn.Linear`` decoder of ``model``'s causal-LM head when ``linear_cross_entropy`` can stand
    in for ``model.head_logits`` + cross-entropy (no transform, no hooks, an unsharded weight), else None."""
    head = getattr(model, "head", None)
    if type(head) is not LMHead or type(head.decoder) is not nn.Linear:
        return None
    dec = head.decoder
    if head._forward_hooks or head._forward_pre_hooks or dec._forward_hooks or dec._forward_pre_hooks:
        return None
    if type(dec.weight) is not nn.Parameter or dec.weight.dim() != 2 or dec.weight.numel() == 0:
        return None  # e.g. FSDP's sharded parameters: keep the module call
    return dec
