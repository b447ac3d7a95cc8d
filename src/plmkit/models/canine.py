"""CANINE: a tokenization-free character encoder (Clark et al. 2022, arXiv:2103.06874), on plmkit's ``Block``.

Data flow (``CanineConfig`` fields in brackets; r = [downsampling_rate])::

    code points (B, T) ─► hash embedding: K = [num_hashes] hash functions h_k(x) = ((x + 1) p_k) mod B
                          (B = [num_buckets], p_k the k-th of ``PRIMES``), each with its own table of width
                          H / K; the slices are concatenated -> (B, T, H)
                        + learned char positions (+ token types) -> LayerNorm -> dropout
        ─► initial char encoder: ONE Block with local attention: characters attend only inside their own
           block of [local_window] characters (i // w == j // w) -> h_init (B, T, H)
        ─► downsampling: strided Conv1d(H, H, kernel r, stride r) -> GELU over h_init (T padded to a
           multiple of r), the [CLS] character's h_init prepended as molecule 0, LayerNorm -> (B, 1 + T/r, H)
        ─► deep Transformer: [num_layers] Blocks with full attention over the molecules -> m (B, 1 + T/r, H);
           pooled = m[:, 0]
        ─► upsampling: each molecule 1.. repeated r times (char i reads molecule 1 + i // r), concatenated
           with h_init (the residual path of the characters) -> Conv1d(2H, H, [upsampling_kernel_size],
           "same" padding: (k - 1) // 2 left, k // 2 right) -> GELU -> LayerNorm
        ─► final char layer: ONE Block with full attention -> last_hidden_state (B, T, H)

The molecule attention mask is the char mask max-pooled over each group of r (a molecule is real when any
of its characters is); the [CLS] molecule is always real. Dropout after the convolutions follows
``hidden_dropout``.

Deviations from the paper, stated: the local attention of the initial layer is block-diagonal over blocks
of ``local_window`` characters (the paper's "blockwise local attention"); CANINE's [CLS]-molecule is
prepended and the molecules are not truncated, so the deep stack sees 1 + ceil(T / r) positions.

Inputs are Unicode code points (``ord(c)``); special symbols use private-use code points
(``CLS`` = 0xE000, ``SEP`` = 0xE001, ``MASK`` = 0xE003, ``PAD`` = 0), as CANINE does.

The model returns states, never a loss; pretraining objectives (CANINE-C's character loss, CANINE-S's
sub-word loss) are not in plmkit yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.base import PretrainedModel
from plmkit.models.config import ConfigError, ModelConfig
from plmkit.models.layers import AttentionContext, Block

PRIMES = (31, 43, 59, 61, 73, 97, 103, 113, 137, 149, 157, 173, 181, 193, 211, 223)
PAD, CLS, SEP, MASK = 0, 0xE000, 0xE001, 0xE003
MAX_CODEPOINT = 0x10FFFF


@dataclass(kw_only=True)
class CanineConfig(ModelConfig):
    """``ModelConfig`` (hidden size, deep layers, heads, dropout, ...) plus CANINE's character machinery."""

    family: str = "canine"
    vocab_size: int = MAX_CODEPOINT + 1
    max_position_embeddings: int = 2048
    num_hashes: int = 8
    num_buckets: int = 16384
    downsampling_rate: int = 4
    local_window: int = 128
    upsampling_kernel_size: int = 4
    head: Any = None
    pad_token_id: int | None = PAD

    def __post_init__(self) -> None:
        super().__post_init__()

        def bad(name: str, expected: str) -> None:
            raise ConfigError(f"CanineConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        if not isinstance(self.num_hashes, int) or not 1 <= self.num_hashes <= len(PRIMES):
            bad("num_hashes", f"an integer in [1, {len(PRIMES)}]")
        if self.hidden_size % self.num_hashes:
            bad("num_hashes", f"a divisor of hidden_size={self.hidden_size}")
        for name in ("num_buckets", "downsampling_rate", "local_window", "upsampling_kernel_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "a positive integer")
        if self.head is not None:
            bad("head", "None (CANINE returns character states; objectives add their own heads)")


def hash_buckets(codepoints: Tensor, num_hashes: int, num_buckets: int) -> Tensor:
    """(B, T) code points -> (K, B, T) buckets: h_k(x) = ((x + 1) * PRIMES[k]) mod num_buckets."""
    return torch.stack([((codepoints + 1) * PRIMES[k]) % num_buckets for k in range(num_hashes)])


def local_attention_mask(T: int, window: int, device: torch.device | None = None) -> Tensor:
    """(T, T) bool: position i may attend to j iff both lie in the same block of ``window`` characters."""
    blk = torch.arange(T, device=device) // window
    return blk[:, None] == blk[None, :]


class HashEmbedding(nn.Module):
    """K tables (num_buckets, H / K); the embedding of x is the concatenation of table_k[h_k(x)]."""

    def __init__(self, config: CanineConfig) -> None:
        super().__init__()
        self.num_hashes, self.num_buckets = config.num_hashes, config.num_buckets
        width = config.hidden_size // config.num_hashes
        self.tables = nn.ModuleList(nn.Embedding(config.num_buckets, width) for _ in range(config.num_hashes))

    def forward(self, codepoints: Tensor) -> Tensor:
        buckets = hash_buckets(codepoints, self.num_hashes, self.num_buckets)
        return torch.cat([t(b) for t, b in zip(self.tables, buckets)], dim=-1)


@dataclass
class CanineOutput:
    last_hidden_state: Tensor  # (B, T, H) final character states
    pooled: Tensor  # (B, H) the [CLS] molecule after the deep stack
    molecules: Tensor  # (B, 1 + ceil(T / r), H) deep-stack output
    initial: Tensor  # (B, T, H) the local layer's output (h_init)
    logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None


class Canine(PretrainedModel):
    """CANINE character encoder (see the module docstring)."""

    def __init__(self, config: CanineConfig) -> None:
        super().__init__()
        if not isinstance(config, CanineConfig):
            raise ConfigError(f"Canine needs a CanineConfig, got {type(config).__name__}")
        self.config = config
        H, r = config.hidden_size, config.downsampling_rate
        self.hash = HashEmbedding(config)
        self.position = nn.Embedding(config.max_position_embeddings, H)
        if config.type_vocab_size > 0:
            self.token_type = nn.Embedding(config.type_vocab_size, H)
        self.embed_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.initial = Block(config)
        self.down = nn.Conv1d(H, H, kernel_size=r, stride=r)
        self.down_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.up = nn.Conv1d(2 * H, H, kernel_size=config.upsampling_kernel_size)
        self.up_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.final = Block(config)
        self.init_heads()
        self.init_weights()

    # ------------------------------------------------------------------ structure
    def init_weights(self, module: nn.Module | None = None) -> None:
        std = self.config.initializer_range
        with torch.no_grad():
            for m in (self if module is None else module).modules():
                if isinstance(m, (nn.Linear, nn.Embedding, nn.Conv1d)):
                    m.weight.normal_(0.0, std)
                    if getattr(m, "bias", None) is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()

    def embedding_parameters(self):
        mods = [self.hash, self.position, self.embed_norm] + ([self.token_type] if hasattr(self, "token_type") else [])
        return [p for m in mods for p in m.parameters()]

    def layer_modules(self) -> list[nn.Module]:
        return [self.initial, *self.layers, self.final]

    def get_input_embeddings(self) -> nn.Module:
        return self.hash

    @property
    def num_layers(self) -> int:
        return len(self.layer_modules())

    # ------------------------------------------------------------------ pieces (public for tests and analysis)
    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise UserError(f"input of {T} characters exceeds max_position_embeddings="
                            f"{self.config.max_position_embeddings}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) > MAX_CODEPOINT):
            raise UserError(f"input_ids must be Unicode code points in [0, {MAX_CODEPOINT:#x}]")
        x = self.hash(input_ids) + self.position(torch.arange(T, device=input_ids.device))[None]
        if hasattr(self, "token_type"):
            x = x + (self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids))
        return self.dropout(self.embed_norm(x))

    def downsample(self, h_init: Tensor, char_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H) char states -> molecules (B, 1 + ceil(T/r), H) and their (B, 1 + ceil(T/r)) bool mask."""
        r = self.config.downsampling_rate
        B, T, H = h_init.shape
        pad = (-T) % r
        x = F.pad(h_init, (0, 0, 0, pad))  # (B, T', H)
        m = F.pad(char_mask, (0, pad))
        conv = F.gelu(self.down(x.transpose(1, 2))).transpose(1, 2)  # (B, T'/r, H)
        mol = self.dropout(self.down_norm(torch.cat([h_init[:, :1], conv], dim=1)))
        mol_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=m.device),
                              m.view(B, -1, r).any(dim=-1)], dim=1)
        return mol, mol_mask

    def upsample(self, molecules: Tensor, h_init: Tensor) -> Tensor:
        """Deep molecules (B, 1 + M, H) + h_init (B, T, H) -> (B, T, H): molecule 1 + i // r for char i,
        concatenated with h_init, then the "same"-padded convolution."""
        r, k = self.config.downsampling_rate, self.config.upsampling_kernel_size
        T = h_init.shape[1]
        rep = molecules[:, 1:].repeat_interleave(r, dim=1)[:, :T]  # (B, T, H)
        x = torch.cat([h_init, rep], dim=-1).transpose(1, 2)  # (B, 2H, T)
        x = F.pad(x, ((k - 1) // 2, k // 2))
        return self.dropout(self.up_norm(F.gelu(self.up(x).transpose(1, 2))))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                output_hidden_states: bool = False, labels_mask: Tensor | None = None, **unused: Any) -> CanineOutput:
        if unused:
            raise UserError(f"Canine.forward: unexpected arguments {sorted(unused)}")
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise UserError(f"input_ids must be an integer (batch, chars) tensor, got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        dev = input_ids.device
        am = (attention_mask.to(torch.bool) if attention_mask is not None
              else torch.ones(B, T, dtype=torch.bool, device=dev))
        x = self.embed(input_ids, token_type_ids)
        hidden = [x] if output_hidden_states else None
        local = local_attention_mask(T, self.config.local_window, dev)[None, None] & am[:, None, None, :]
        local = local | ~local.any(dim=-1, keepdim=True)
        h_init = self.initial(x, AttentionContext(mask=local), 0)
        mol, mol_mask = self.downsample(h_init, am)
        ctx = AttentionContext(mask=mol_mask[:, None, None, :])
        for i, layer in enumerate(self.layers):
            mol = layer(mol, ctx, i + 1)
            if hidden is not None:
                hidden.append(mol)
        up = self.upsample(mol, h_init)
        out = self.final(up, AttentionContext(mask=am[:, None, None, :]), len(self.layers) + 1)
        if hidden is not None:
            hidden.append(out)
        return CanineOutput(out, mol[:, 0], mol, h_init, None, tuple(hidden) if hidden is not None else None)


def encode_text(texts: list[str], max_chars: int | None = None) -> tuple[Tensor, Tensor]:
    """``[CLS] text [SEP]`` as code points, right-padded with PAD: (ids (B, T), attention_mask (B, T))."""
    rows = []
    for t in texts:
        body = [ord(c) for c in t]
        if max_chars is not None:
            body = body[: max_chars - 2]
        rows.append([CLS] + body + [SEP])
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), PAD, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask
