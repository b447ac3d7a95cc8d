"""XLNet: Transformer-XL relative attention, segment recurrence memory and two-stream attention
over a factorisation-order permutation (Yang et al. 2019), built from the shared layers
(``MLP`` feed-forward, LayerNorm) with its own attention and stack because the data flow differs.

Per layer (post-LN), for the content stream h (T rows) and the query stream g (P rows):

    h' = LN(h + o(Attn(q = h,  kv = [mem; h], mask_h)))     g' = LN(g + o(Attn(q = g,  kv = [mem; h], mask_g)))
    h'' = LN(h' + MLP(h'))                                   g'' = LN(g' + MLP(g'))

Attn score (Dai et al. 2019 eq. + segment term): (q + u) . k_j + (q + v) . r_(i-j) + (q + s) . seg(i, j),
scaled by 1/sqrt(D): ``r_w_bias`` = u, ``r_r_bias`` = v, ``r_s_bias`` = s, r = sinusoidal relative
encodings projected by ``attn.r``, seg = ``seg_embed`` [same segment | different segment].

Masks follow HF XLNet: ``perm_mask`` (B, T, T), 1 = query i may NOT attend to key j (the query
stream uses it as is; the content stream may also see its own position); ``attention_mask``
(B, T) 1 = token masks padded keys; ``target_mapping`` (B, P, T) one-hot: the P query-stream rows
(initialised with ``mask_emb``) predict those positions, and ``last_hidden_state`` / ``logits``
are then (B, P, ...). ``mems`` (one (B, M, H) per layer) are prepended to the keys/values (segment
recurrence); ``use_mems`` returns the new ones (last ``mem_len`` content states per layer).

References: Yang et al. 2019 (XLNet, arXiv:1906.08237); Dai et al. 2019 (Transformer-XL);
transformers ``modeling_xlnet.py`` (v5) for the numerics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.base import PretrainedModel
from plmkit.models.config import ConfigError, ModelConfig
from plmkit.models.kernels import Dropout
from plmkit.models.layers import MLP, make_norm
from plmkit.models.seq2seq import LMHead


@dataclass(kw_only=True)
class XLNetConfig(ModelConfig):
    """``ModelConfig`` + XLNet's memory / attention settings (family "xlnet")."""

    family: str = "xlnet"
    attn_type: str = "bi"
    """"bi" (XLNet pretraining) or "uni" (causal, Transformer-XL)."""
    mem_len: int | None = None
    """Number of content states kept per layer for the next segment (None / 0: no memory)."""
    reuse_len: int | None = None
    """Only the first ``reuse_len`` states of a segment go to memory."""
    bi_data: bool = False
    """Forward / backward relative encodings for the two batch halves."""
    clamp_len: int = -1
    """Clamp relative distances to this (-1: no clamp)."""
    same_length: bool = False
    """uni: every token sees the same number of keys."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attn_type not in ("bi", "uni"):
            raise ConfigError(f"XLNetConfig.attn_type: expected 'bi' or 'uni', got {self.attn_type!r}")
        if self.hidden_size % 2:
            raise ConfigError("XLNetConfig.hidden_size: sinusoidal relative encodings need an even width")


@dataclass
class XLNetOutput:
    last_hidden_state: Tensor  # (B, T, H), or (B, P, H) for the query stream with target_mapping
    logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    mems: tuple[Tensor, ...] | None = None  # one (B, M, H) per layer when use_mems
    pooled: Tensor | None = None
    past_key_values: Any = None


def relative_encoding(qlen: int, klen: int, config: XLNetConfig, bsz: int, device) -> Tensor:
    """Sinusoidal encodings of distances klen .. -qlen+1 (bi) or klen .. 0 (uni): (B|1, R, H)."""
    d = config.hidden_size
    inv = 1.0 / torch.pow(10000, torch.arange(0, d, 2, device=device).float() / d)
    beg, end = (klen, -qlen) if config.attn_type == "bi" else (klen, -1)

    def emb(pos: Tensor) -> Tensor:
        if config.clamp_len > 0:
            pos = pos.clamp(-config.clamp_len, config.clamp_len)
        x = pos[:, None] * inv
        return torch.cat([x.sin(), x.cos()], dim=-1)  # (R, H)

    fwd = emb(torch.arange(beg, end, -1, device=device).float())
    if not config.bi_data:
        return fwd[None]
    if bsz % 2:
        raise UserError("bi_data needs an even batch size")
    bwd = emb(torch.arange(-beg, -end, 1, device=device).float())
    return torch.cat([fwd[None].expand(bsz // 2, -1, -1), bwd[None].expand(bsz // 2, -1, -1)], 0)


class XLNetAttention(nn.Module):
    """Relative multi-head attention with content/position/segment biases (see module docstring)."""

    def __init__(self, config: XLNetConfig) -> None:
        super().__init__()
        self.n, self.d = config.num_heads, config.dim_per_head
        H, nd = config.hidden_size, config.num_heads * config.dim_per_head
        self.q = nn.Linear(H, nd, bias=False)
        self.kv = nn.Linear(H, 2 * nd, bias=False)
        self.r = nn.Linear(H, nd, bias=False)
        self.o = nn.Linear(nd, H, bias=False)
        self.r_w_bias = nn.Parameter(torch.zeros(self.n, self.d))
        self.r_r_bias = nn.Parameter(torch.zeros(self.n, self.d))
        self.r_s_bias = nn.Parameter(torch.zeros(self.n, self.d))
        self.seg_embed = nn.Parameter(torch.zeros(2, self.n, self.d))
        self.scale = self.d ** -0.5
        self.dropout = Dropout(config.attention_dropout)

    def heads(self, x: Tensor) -> Tensor:  # (B, L, N D) -> (B, N, L, D)
        return x.view(*x.shape[:-1], self.n, self.d).transpose(-3, -2)

    def core(self, q: Tensor, k: Tensor, v: Tensor, kr: Tensor, seg: Tensor | None, mask: Tensor | None) -> Tensor:
        """q (B, N, T, D), k/v (B, N, K, D), kr (B|1, N, R, D), seg (B, T, K) long 0/1, mask (B, T, K)
        bool (True = masked) -> (B, N, T, D)."""
        K = k.shape[2]
        ac = (q + self.r_w_bias[:, None]) @ k.transpose(-1, -2)  # (B, N, T, K)
        bd = (q + self.r_r_bias[:, None]) @ kr.transpose(-1, -2)  # (B, N, T, R)
        B, N, T, R = bd.shape
        bd = bd.reshape(B, N, R, T)[:, :, 1:].reshape(B, N, T, R - 1)[..., :K]  # relative shift
        score = ac + bd
        if seg is not None:
            ef = torch.einsum("bntd,snd->bnts", q + self.r_s_bias[:, None], self.seg_embed)  # (B, N, T, 2)
            score = score + ef.gather(-1, seg[:, None].expand(B, N, T, K))
        score = score * self.scale
        if mask is not None:
            score = score - 1e30 * mask[:, None].to(score.dtype)
        prob = self.dropout(score.softmax(-1))
        return prob @ v


class XLNetLayer(nn.Module):
    """``attn`` + ``attn_norm`` (post-LN) and the shared ``MLP`` + ``mlp_norm``, applied to both streams."""

    def __init__(self, config: XLNetConfig) -> None:
        super().__init__()
        self.attn = XLNetAttention(config)
        self.attn_norm = make_norm(config, config.hidden_size)
        self.mlp = MLP(config)
        self.mlp_norm = make_norm(config, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout)

    def _ff(self, x: Tensor) -> Tensor:
        return self.mlp_norm(x + self.dropout(self.mlp(x)))

    def forward(self, h: Tensor, g: Tensor | None, mask_h, mask_g, r: Tensor, seg, mem: Tensor | None,
                target_mapping: Tensor | None) -> tuple[Tensor, Tensor | None]:
        a = self.attn
        cat = h if mem is None else torch.cat([mem, h], dim=1)  # (B, K, H)
        k, v = a.kv(cat).chunk(2, dim=-1)
        k, v = a.heads(k), a.heads(v)
        kr = a.heads(a.r(r))  # (B|1, N, R, D)
        out_h = a.core(a.heads(a.q(h)), k, v, kr, seg, mask_h)
        h = self.attn_norm(h + self.dropout(a.o(out_h.transpose(1, 2).flatten(2))))
        if g is not None:
            qg = a.heads(a.q(g))  # (B, N, P, D)
            if target_mapping is not None:
                qg = torch.einsum("bnmd,bml->bnld", qg, target_mapping)
                out_g = torch.einsum("bnld,bml->bnmd", a.core(qg, k, v, kr, seg, mask_g), target_mapping)
            else:
                out_g = a.core(qg, k, v, kr, seg, mask_g)
            g = self._ff(self.attn_norm(g + self.dropout(a.o(out_g.transpose(1, 2).flatten(2)))))
        return self._ff(h), g


class XLNet(PretrainedModel):
    """XLNet backbone + tied LM head (``head.decoder`` with bias). See the module docstring."""

    def __init__(self, config: XLNetConfig) -> None:
        super().__init__()
        if not isinstance(config, XLNetConfig):
            raise ConfigError(f"XLNet needs an XLNetConfig, got {type(config).__name__}")
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.mask_emb = nn.Parameter(torch.zeros(config.hidden_size))
        self.layers = nn.ModuleList(XLNetLayer(config) for _ in range(config.num_layers))
        self.dropout = Dropout(config.hidden_dropout)
        self.head = None
        if config.head is not None:
            self.head = LMHead(config)
            self.head.decoder.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.init_heads()
        self.init_weights()
        if self.head is not None and config.tie_word_embeddings:
            self.head.decoder.weight = self.word.weight

    def init_weights(self, module: nn.Module | None = None) -> None:
        std = self.config.initializer_range
        with torch.no_grad():
            for m in (self if module is None else module).modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    m.weight.normal_(0.0, std)
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                elif isinstance(m, XLNetAttention):
                    for p in (m.r_w_bias, m.r_r_bias, m.r_s_bias, m.seg_embed):
                        p.normal_(0.0, std)
            if module is None:
                self.mask_emb.normal_(0.0, std)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def embedding_parameters(self):
        return [self.word.weight, self.mask_emb]

    def layer_modules(self) -> list[nn.Module]:
        return list(self.layers)

    def head_logits(self, hidden: Tensor) -> Tensor:
        if self.head is None:
            raise UserError("this XLNet has no LM head (config.head=None)")
        return self.head(hidden)

    def _masks(self, B: int, T: int, M: int, attention_mask, perm_mask, device):
        """(mask_h, mask_g): (B, T, M + T) bool, True = may NOT attend (or None)."""
        cfg = self.config
        masked = None
        if cfg.attn_type == "uni":  # Transformer-XL causal mask (HF create_mask)
            ones = torch.ones(T, M + T, dtype=torch.bool, device=device)
            masked = ones.triu(M + 1)
            if cfg.same_length:
                masked[:, :T] |= ones[:, :T].tril(-1)
            masked = masked[None]
        data = None
        if attention_mask is not None:
            if attention_mask.shape != (B, T):
                raise UserError(f"attention_mask must be (batch, seq_len) = ({B}, {T}), got {tuple(attention_mask.shape)}")
            data = (attention_mask == 0)[:, None, :].expand(B, T, T)
        if perm_mask is not None:
            if perm_mask.shape != (B, T, T):
                raise UserError(f"perm_mask must be (batch, seq_len, seq_len) = ({B}, {T}, {T}), got "
                                f"{tuple(perm_mask.shape)}")
            pm = perm_mask > 0
            data = pm if data is None else data | pm
        if data is not None:
            if M:
                data = torch.cat([torch.zeros(B, T, M, dtype=torch.bool, device=device), data], dim=2)
            masked = data if masked is None else masked | data
        if masked is None:
            return None, None
        masked = masked.expand(B, T, M + T)
        eye = torch.zeros(T, M + T, dtype=torch.bool, device=device)
        eye[:, M:] = torch.eye(T, dtype=torch.bool, device=device)
        return masked & ~eye, masked

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                perm_mask: Tensor | None = None, target_mapping: Tensor | None = None, mems: Any = None,
                use_mems: bool = False, labels_mask: Tensor | None = None, output_hidden_states: bool = False,
                **unused: Any) -> XLNetOutput:
        """See the module docstring for the inputs (HF XLNet's conventions)."""
        bad = [k for k, v in unused.items() if v is not None and v is not False]
        if bad:
            raise UserError(f"XLNet does not take {', '.join(bad)}")
        cfg = self.config
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise UserError(f"input_ids must be an integer (batch, seq_len) tensor, got {tuple(input_ids.shape)}")
        if input_ids.numel() and (int(input_ids.max()) >= cfg.vocab_size or int(input_ids.min()) < 0):
            raise UserError(f"token id {int(input_ids.max())} is outside the vocabulary: expected 0 <= id < "
                            f"vocab_size={cfg.vocab_size}")
        B, T = input_ids.shape
        dev = input_ids.device
        if mems is not None and len(mems) != cfg.num_layers:
            raise UserError(f"mems must hold one (batch, mem_len, hidden) tensor per layer ({cfg.num_layers})")
        M = mems[0].shape[1] if mems is not None and mems[0] is not None else 0
        mask_h, mask_g = self._masks(B, T, M, attention_mask, perm_mask, dev)
        h = self.dropout(self.word(input_ids))
        g = None
        if target_mapping is not None:
            if target_mapping.dim() != 3 or target_mapping.shape[0] != B or target_mapping.shape[2] != T:
                raise UserError(f"target_mapping must be (batch, num_predict, seq_len) = ({B}, P, {T}), got "
                                f"{tuple(target_mapping.shape)}")
            target_mapping = target_mapping.to(h.dtype)
            g = self.dropout(self.mask_emb.expand(B, target_mapping.shape[1], -1))
        seg = None
        if token_type_ids is not None:
            cat = token_type_ids if not M else torch.cat([token_type_ids.new_zeros(B, M), token_type_ids], 1)
            seg = (token_type_ids[:, :, None] != cat[:, None, :]).long()  # (B, T, K): 1 = different segment
        r = self.dropout(relative_encoding(T, M + T, cfg, B, dev).to(h.dtype))
        new_mems: list[Tensor] = []
        hidden = [] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if use_mems:
                new_mems.append(self._cache(h, mems[i] if mems is not None else None))
            if hidden is not None:
                hidden.append(h)
            h, g = layer(h, g, mask_h, mask_g, r, seg, mems[i] if mems is not None else None, target_mapping)
        out = self.dropout(g if g is not None else h)
        if hidden is not None:
            hidden.append(out)
        logits = None
        if self.head is not None:
            logits = self.head(out[labels_mask.to(torch.bool)] if labels_mask is not None else out)
        return XLNetOutput(out, logits, tuple(hidden) if hidden is not None else None,
                           tuple(new_mems) if use_mems else None)

    def _cache(self, cur: Tensor, prev: Tensor | None) -> Tensor:
        cfg = self.config
        if cfg.reuse_len:
            cur = cur[:, : cfg.reuse_len]
        new = cur if prev is None else torch.cat([prev, cur], dim=1)
        if cfg.mem_len:
            new = new[:, -cfg.mem_len:]  # mem_len None / 0 keeps everything (as HF)
        return new.detach()
