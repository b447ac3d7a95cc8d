"""Pre-Transformer neural language models: Bengio's FFNN LM, Elman RNN LM, LSTM LM, ELMo biLM.

Contents
--------
- ``RecurrentConfig``: one flat, JSON-serialisable config for the four families
  (``family`` = "ffnn" | "rnn" | "lstm" | "elmo"); ``PRESETS`` (``ffnn-small``, ``rnn-small``,
  ``lstm-small``, ``elmo-small`` and ``-tiny`` variants: the "recurrent" entries of the one preset
  table, ``plmkit.models.presets``); ``build``. Saving and loading are ``plmkit.interop.native``'s
  ``save_recurrent`` / ``load_recurrent`` (``model.save_pretrained`` and ``plmkit.load(dir)`` reach them).
- ``FFNNLM`` (Bengio et al. 2003): y = b + W x + U tanh(d + H x), x the concatenated embeddings
  of the n-1 previous tokens. It runs on (B, T) windows by unfolding a context at every position
  (positions before the start see a learned start vector), so the ``clm`` objective trains it.
- ``RNNLM``: Elman (``family="rnn"``, tanh or relu) or LSTM (``family="lstm"``) stack with
  embedding / between-layer / output dropout and optional tied input-output embeddings
  (Mikolov et al. 2010; Zaremba et al. 2014; Press & Wolf 2017).
- ``ELMo`` (Peters et al. 2018): character-CNN token encoder (filters + max-pool + highway +
  projection), forward and backward 2-layer LSTMs with projections and a residual connection
  between the layers, one softmax shared by both directions; ``layer_representations`` gives
  the L+1 layers [x; x], [f_1; b_1], [f_2; b_2] that ``ScalarMix`` combines.
- ``CoVe`` (McCann et al. 2017): the MT-LSTM, a packed bidirectional LSTM encoder (its outputs are the
  context vectors) and an attentional LSTM decoder, trained by the ``translation`` objective.
- ``plmkit.models.heads.ScalarMix``: gamma * sum_j softmax(s)_j h_j,
  the task-specific ELMo mix that the fine-tuning feature mode puts over these layers.
- The biLM loss of ELMo is ``plmkit.objectives.bilm.bilm_loss`` (models never compute a loss).

Every class derives from ``plmkit.models.base.PretrainedModel`` (heads, ``add_head``,
``layer_groups``, ``num_parameters``, ``save_pretrained``); this package sits above ``models`` and
``plmkit/__init__.py`` registers ``build`` as the builder of the "recurrent" presets.

All models follow the forward contract of docs/CONTRACTS.md: ``model(input_ids,
attention_mask=None, labels_mask=None, output_hidden_states=False, past_key_values=None,
use_cache=False)`` -> ``RecurrentOutput`` with ``last_hidden_state`` (B, T, H_out), ``logits``
(B, T, V) (or (N, V) with ``labels_mask``), ``hidden_states``; plus ``head_logits``,
``layer_groups``, ``num_layers``, ``add_head``, ``save_pretrained`` (plmkit's own format:
config.json with ``"plmkit_family"`` + model.safetensors) and ``generate``. The recurrent state
is the cache: ``past_key_values`` holds per-layer (h, c) states (FFNN: the last n-2 token ids).

Shape legend: B batch, T time, V vocabulary, E embedding, H hidden, P ELMo projection, C chars.

References
----------
1) Y. Bengio, R. Ducharme, P. Vincent, C. Jauvin. A Neural Probabilistic Language Model. JMLR 2003.
2) T. Mikolov, M. Karafiat, L. Burget, J. Cernocky, S. Khudanpur. Recurrent neural network based
   language model. Interspeech 2010.
3) W. Zaremba, I. Sutskever, O. Vinyals. Recurrent Neural Network Regularization. 2014.
4) O. Press, L. Wolf. Using the Output Embedding to Improve Language Models. EACL 2017.
5) M. Peters et al. Deep contextualized word representations (ELMo). NAACL 2018;
   Y. Kim et al. Character-Aware Neural Language Models. AAAI 2016 (char-CNN + highway).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from plmkit.errors import UserError, suggest
from plmkit.models.base import PretrainedModel
from plmkit.models.kernels import Dropout
from plmkit.models.presets import PRESETS as _PRESETS

FAMILIES = ("ffnn", "rnn", "lstm", "elmo", "cove")
FORMAT = "plmkit-recurrent-1"


# ----------------------------------------------------------------------------- config
@dataclass(kw_only=True)
class RecurrentConfig:
    """Architecture of a FFNN / RNN / LSTM LM or an ELMo biLM."""

    family: Literal["ffnn", "rnn", "lstm", "elmo", "cove"] = "lstm"
    vocab_size: int = 1000
    embedding_size: int = 64
    """Token embedding width E (FFNN, RNN, LSTM). ELMo: unused (its char-CNN projects to hidden_size/2)."""
    hidden_size: int = 64
    """FFNN: tanh units; RNN/LSTM: state size; ELMo: width of each layer representation (2 x projection);
    CoVe: encoder LSTM size per direction (the decoder's is 2 x hidden_size)."""
    num_layers: int = 1
    """Recurrent layers (ELMo: per direction). FFNN: 1 (one tanh layer)."""
    context_size: int = 4
    """FFNN: number of previous tokens seen (n - 1 of an n-gram model)."""
    direct_connections: bool = False
    """FFNN: Bengio's direct input-to-output weights W (the output layer also reads x)."""
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    """Elman RNN activation."""
    dropout: float = 0.0
    """Dropout on embeddings, between layers and before the output layer."""
    tie_word_embeddings: bool = False
    """Share the input embedding with the output layer (RNN/LSTM/FFNN; a projection is added if H != E)."""
    # ELMo
    lstm_size: int = 256
    """ELMo: LSTM cell size (projected down to hidden_size / 2)."""
    char_embedding_size: int = 16
    char_filters: list[list[int]] = field(default_factory=lambda: [[1, 32], [2, 32], [3, 64], [4, 128]])
    """ELMo: [width, number of filters] of the character CNN."""
    num_highway: int = 2
    max_chars_per_token: int = 20
    # plumbing shared with ModelConfig so that objectives/trainer can read them
    causal: bool = True
    """True for the left-to-right LMs; ELMo is bidirectional (False): train it with ``bilm_loss``."""
    head: str | None = "lm"
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    mask_token_id: int | None = None
    max_position_embeddings: int = 1_000_000
    """No position table: any length works (kept for code that reads this field)."""
    initializer_range: float = 0.1

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise UserError(f"recurrent model: family must be one of {FAMILIES}, got {self.family!r}"
                            + suggest(self.family, FAMILIES))
        for key in ("vocab_size", "embedding_size", "hidden_size", "num_layers", "context_size", "lstm_size",
                    "char_embedding_size", "max_chars_per_token"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"recurrent model: {key} must be a positive integer, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"recurrent model: dropout must be in [0, 1), got {self.dropout!r}")
        if self.nonlinearity not in ("tanh", "relu"):
            raise UserError(f"recurrent model: nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}")
        if self.family == "elmo":
            if self.hidden_size % 2:
                raise UserError(f"elmo: hidden_size must be even (2 x projection), got {self.hidden_size}")
            self.causal = False
            self.char_filters = [[int(w), int(n)] for w, n in self.char_filters]
        if self.family == "cove":
            self.causal = False  # the encoder reads both directions; the decoder is conditioned on it

    @property
    def projection_size(self) -> int:
        return self.hidden_size // 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["plmkit_family"] = self.family
        d["plmkit_format"] = FORMAT
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "RecurrentConfig":
        d = {k: v for k, v in d.items() if k not in ("plmkit_family", "plmkit_format")}
        names = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in names:
                raise UserError(f"{source}: unknown recurrent-model key {k!r}{suggest(k, names)}")
        return cls(**d)

    def replace(self, **overrides: Any) -> "RecurrentConfig":
        return RecurrentConfig.from_dict({**dataclasses.asdict(self), **overrides}, source="overrides")


PRESETS: dict[str, dict[str, Any]] = {name: p.fields for name, p in _PRESETS.items() if p.kind == "recurrent"}
"""The recurrent presets of ``plmkit.models.presets`` (name -> ``RecurrentConfig`` fields)."""


# ----------------------------------------------------------------------------- outputs, mix
@dataclass
class RecurrentOutput:
    """Model output (the fields of the Transformer output + ELMo's backward logits)."""

    last_hidden_state: torch.Tensor
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    pooled: torch.Tensor | None = None
    past_key_values: Any = None
    backward_logits: torch.Tensor | None = None
    """ELMo only: (B, T, V) logits of the backward LM (position t predicts token t - 1)."""
    attentions: torch.Tensor | None = None
    """CoVe only: (B, U, S) attention of each decoder step over the source positions (rows sum to 1)."""


# ----------------------------------------------------------------------------- base class
class RecurrentLM(PretrainedModel):
    """What the recurrent LMs add to ``PretrainedModel``: their uniform initialisation and a
    generation loop whose cache is the recurrent state."""

    config: RecurrentConfig

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__()
        self.config = config
        self.init_heads()

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def init_weights(self, module: nn.Module | None = None) -> None:
        """The whole model: uniform(-r, r) matrices, zero biases. A head passed to ``add_head`` keeps
        its own PyTorch initialisation (as these models always did)."""
        if module is None:
            self._init_uniform()

    def _init_uniform(self) -> None:
        r = self.config.initializer_range
        for name, p in self.named_parameters():
            if p.dim() >= 2 and not name.startswith("heads."):
                nn.init.uniform_(p, -r, r)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 20,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 num_beams: int = 1, repetition_penalty: float = 1.0, eos_token_id: int | None = None,
                 streamer: Any = None) -> torch.Tensor:
        """Greedy or sampled continuation (the recurrent state is the cache). Returns (B, T + new)."""
        if not self.config.causal:
            raise UserError(f"generate needs a left-to-right LM; {self.config.family} is bidirectional")
        if num_beams != 1:
            raise UserError("beam search is not supported for recurrent LMs (use num_beams=1)")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise UserError("recurrent LMs generate from unpadded prompts only (equal lengths, no padding)")
        eos = self.config.eos_token_id if eos_token_id is None else eos_token_id
        was_training = self.training
        self.eval()
        out = self(input_ids, use_cache=True)
        seq, past = input_ids, out.past_key_values
        logits = out.logits[:, -1]
        done = torch.zeros(len(seq), dtype=torch.bool, device=seq.device)
        for _ in range(max_new_tokens):
            logits = logits.float()
            if repetition_penalty != 1.0:
                prev = torch.gather(logits, 1, seq)
                logits = logits.scatter(1, seq, torch.where(prev > 0, prev / repetition_penalty, prev * repetition_penalty))
            if do_sample:
                logits = logits / max(temperature, 1e-6)
                if top_k > 0:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                if top_p < 1.0:
                    srt, idx = torch.sort(logits, descending=True)
                    cum = torch.softmax(srt, -1).cumsum(-1)
                    drop = cum - torch.softmax(srt, -1) > top_p
                    logits = logits.masked_fill(drop.scatter(1, idx, drop), float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1)[:, 0]
            else:
                nxt = logits.argmax(-1)
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                done |= nxt == eos
            seq = torch.cat([seq, nxt[:, None]], 1)
            if streamer is not None:
                streamer.put(nxt)
            if eos is not None and bool(done.all()):
                break
            out = self(nxt[:, None], past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
        if streamer is not None and hasattr(streamer, "end"):
            streamer.end()
        self.train(was_training)
        return seq

    # subclasses
    @staticmethod
    def _select(logits_fn, h: torch.Tensor, labels_mask: torch.Tensor | None) -> torch.Tensor:
        return logits_fn(h[labels_mask]) if labels_mask is not None else logits_fn(h)


def _check_ids(model: RecurrentLM, input_ids: torch.Tensor) -> None:
    if input_ids.dim() != 2:
        raise UserError(f"input_ids must be (batch, time), got shape {tuple(input_ids.shape)}")
    if input_ids.numel() and (int(input_ids.max()) >= model.config.vocab_size or int(input_ids.min()) < 0):
        raise UserError(f"token id {int(input_ids.max())} out of range for vocab_size={model.config.vocab_size}")


# ----------------------------------------------------------------------------- FFNN
class FFNNLM(RecurrentLM):
    """Bengio et al. (2003): P(w_t+1 | w_t-n+2..w_t) = softmax(b + W x + U tanh(d + H x)).

    At position t the context x is [C(w_t-n+2); ...; C(w_t)] ((n-1) E); positions before the
    first token use a learned start vector. With ``direct_connections`` the output layer reads
    [tanh(d + H x); x], i.e. U and W are one Linear over that concatenation, which is what
    ``last_hidden_state`` holds then (so ``head_logits`` keeps working on hidden states).
    """

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embedding_size)
        self.start = nn.Parameter(torch.zeros(c.embedding_size))  # "before the sequence" context word
        self.hidden = nn.Linear(c.context_size * c.embedding_size, c.hidden_size)  # H, d
        self.drop = Dropout(c.dropout)
        out_in = c.hidden_size + (c.context_size * c.embedding_size if c.direct_connections else 0)
        self.proj = nn.Linear(out_in, c.embedding_size, bias=False) if c.tie_word_embeddings and out_in != c.embedding_size else None
        self.output = nn.Linear(c.embedding_size if self.proj is not None else out_in, c.vocab_size)  # U (+W), b
        self._init_uniform()
        if c.tie_word_embeddings:
            self.output.weight = self.embed.weight

    @property
    def output_size(self) -> int:
        c = self.config
        return c.hidden_size + (c.context_size * c.embedding_size if c.direct_connections else 0)

    def embedding_parameters(self):
        return [self.embed.weight, self.start]

    def layer_modules(self):
        return [self.hidden]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.proj(hidden) if self.proj is not None else hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels_mask: torch.Tensor | None = None, output_hidden_states: bool = False,
                past_key_values: Any = None, use_cache: bool = False) -> RecurrentOutput:
        _check_ids(self, input_ids)
        n1 = self.config.context_size
        B, T = input_ids.shape
        e = self.drop(self.embed(input_ids))  # (B, T, E)
        if past_key_values is not None:  # previous n-2 (or fewer) token ids
            prev = self.embed(past_key_values)  # (B, P, E)
            pad = self.start.expand(B, max(0, n1 - 1 - prev.shape[1]), -1)
            e_pad = torch.cat([pad, prev, e], 1)
        else:
            e_pad = torch.cat([self.start.expand(B, n1 - 1, -1), e], 1)  # (B, T + n-2, E)
        x = e_pad.unfold(1, n1, 1)  # (B, T, E, n-1): windows ending at each position
        x = x.transpose(2, 3).reshape(B, T, n1 * self.config.embedding_size)  # (B, T, (n-1) E), oldest first
        h = torch.tanh(self.hidden(x))  # (B, T, H)
        if self.config.direct_connections:
            h = torch.cat([h, x], -1)  # the output layer is [U W] over [h; x]
        h = self.drop(h)
        logits = self._select(self.head_logits, h, labels_mask) if self.config.head else None
        past = None
        if use_cache:
            ids = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], 1)
            past = ids[:, -(n1 - 1):] if n1 > 1 else ids[:, :0]
        hs = (e, h) if output_hidden_states else None
        return RecurrentOutput(last_hidden_state=h, logits=logits, hidden_states=hs, past_key_values=past)


# ----------------------------------------------------------------------------- RNN / LSTM
class RNNLM(RecurrentLM):
    """Elman RNN (``family="rnn"``) or LSTM (``family="lstm"``) LM: embed -> L recurrent layers -> softmax."""

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embedding_size)
        layers = []
        for i in range(c.num_layers):
            d_in = c.embedding_size if i == 0 else c.hidden_size
            if c.family == "lstm":
                layers.append(nn.LSTM(d_in, c.hidden_size, batch_first=True))
            else:
                layers.append(nn.RNN(d_in, c.hidden_size, nonlinearity=c.nonlinearity, batch_first=True))
        self.layers = nn.ModuleList(layers)
        self.drop = Dropout(c.dropout)
        self.proj = (nn.Linear(c.hidden_size, c.embedding_size, bias=False)
                     if c.tie_word_embeddings and c.hidden_size != c.embedding_size else None)
        self.output = nn.Linear(c.embedding_size if self.proj is not None else c.hidden_size, c.vocab_size)
        self._init_uniform()
        if c.family == "lstm":  # forget-gate bias 1 (Jozefowicz et al. 2015)
            for layer in self.layers:
                H = c.hidden_size
                layer.bias_ih_l0.data[H:2 * H] = 1.0
        if c.tie_word_embeddings:
            self.output.weight = self.embed.weight

    def embedding_parameters(self):
        return [self.embed.weight]

    def layer_modules(self):
        return list(self.layers)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.proj(hidden) if self.proj is not None else hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels_mask: torch.Tensor | None = None, output_hidden_states: bool = False,
                past_key_values: Any = None, use_cache: bool = False) -> RecurrentOutput:
        # Right padding never influences earlier positions of a left-to-right RNN, so attention_mask
        # is not needed; a (B, T, T) block mask (clm block_documents) is not representable -> error.
        _check_ids(self, input_ids)
        if attention_mask is not None and attention_mask.dim() > 2:
            raise UserError("recurrent LMs take a (B, T) padding mask only (set clm block_documents: false)")
        h = self.drop(self.embed(input_ids))  # (B, T, E)
        states, new_states = past_key_values or [None] * len(self.layers), []
        hs = [h] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            h, st = layer(h, states[i])  # (B, T, H)
            new_states.append(st)
            h = self.drop(h)
            if hs is not None:
                hs.append(h)
        logits = self._select(self.head_logits, h, labels_mask) if self.config.head else None
        return RecurrentOutput(last_hidden_state=h, logits=logits, hidden_states=tuple(hs) if hs else None,
                               past_key_values=new_states if use_cache else None)


# ----------------------------------------------------------------------------- ELMo
class CharCNN(nn.Module):
    """Token -> characters -> embeddings -> conv filters + max-pool -> highway layers -> projection."""

    PAD, BOW, EOW, OFFSET = 0, 1, 2, 3  # char ids; byte b maps to b + OFFSET

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__()
        c = config
        self.char_embed = nn.Embedding(256 + self.OFFSET, c.char_embedding_size, padding_idx=self.PAD)
        self.convs = nn.ModuleList(nn.Conv1d(c.char_embedding_size, n, w) for w, n in c.char_filters)
        d = sum(n for _, n in c.char_filters)
        self.highways = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(c.num_highway))
        self.project = nn.Linear(d, c.projection_size)
        for hw in self.highways:  # carry gate biased open at the start (Srivastava et al. 2015)
            nn.init.constant_(hw.bias[d:], 1.0)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        B, T, C = chars.shape
        x = self.char_embed(chars.view(B * T, C)).transpose(1, 2)  # (BT, e_c, C)
        x = torch.cat([torch.relu(conv(x)).max(-1).values for conv in self.convs], -1)  # (BT, d)
        for hw in self.highways:
            h, gate = hw(x).chunk(2, -1)
            g = torch.sigmoid(gate)
            x = g * x + (1 - g) * torch.relu(h)
        return self.project(x).view(B, T, -1)  # (B, T, P)


def token_char_ids(tokens: list[str], max_chars: int) -> torch.Tensor:
    """(V, C) char ids: BOW, UTF-8 bytes (truncated), EOW, padding."""
    out = torch.zeros(len(tokens), max_chars, dtype=torch.long)
    for i, t in enumerate(tokens):
        b = list(str(t).encode("utf-8"))[: max_chars - 2]
        row = [CharCNN.BOW] + [x + CharCNN.OFFSET for x in b] + [CharCNN.EOW]
        out[i, : len(row)] = torch.tensor(row)
    return out


class ELMo(RecurrentLM):
    """ELMo biLM: char-CNN token encoder, forward and backward L-layer LSTMs with projections and
    residual connections above the first layer, one softmax shared by both directions.

    ``set_vocabulary(tokens)`` gives the spelling of every token id (saved with the weights);
    until it is called a token is spelled by the decimal digits of its id, which keeps the
    model runnable but gives the char-CNN nothing to generalise from.
    """

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        c = config
        P = c.projection_size
        self.char_cnn = CharCNN(c)
        self.register_buffer("token_chars", token_char_ids([str(i) for i in range(c.vocab_size)],
                                                          c.max_chars_per_token))
        self.forward_layers = nn.ModuleList(nn.LSTM(P, c.lstm_size, proj_size=P if P < c.lstm_size else 0,
                                                    batch_first=True) for _ in range(c.num_layers))
        self.backward_layers = nn.ModuleList(nn.LSTM(P, c.lstm_size, proj_size=P if P < c.lstm_size else 0,
                                                     batch_first=True) for _ in range(c.num_layers))
        if P >= c.lstm_size and P != c.lstm_size:
            raise UserError(f"elmo: lstm_size ({c.lstm_size}) must be >= hidden_size/2 ({P})")
        self.drop = Dropout(c.dropout)
        self.output = nn.Linear(P, c.vocab_size)  # shared by both directions
        self._init_uniform()
        nn.init.normal_(self.char_cnn.char_embed.weight, std=0.1)

    def set_vocabulary(self, tokens: list[str]) -> None:
        """Spell token id i as ``tokens[i]`` for the char-CNN (len(tokens) must equal vocab_size)."""
        if len(tokens) != self.config.vocab_size:
            raise UserError(f"elmo: {len(tokens)} token strings for vocab_size={self.config.vocab_size}")
        self.token_chars = token_char_ids(list(tokens), self.config.max_chars_per_token).to(self.token_chars.device)

    def extend_vocabulary(self, tokens: list[str], bias: float | None = None) -> None:
        """Append ``tokens`` to the vocabulary: the char-CNN spells them like any other token (so a
        task's words need not map to ``<unk>``); their softmax rows start as zero weights with the
        smallest trained bias (or ``bias``), since ELMo's feature use never reads the softmax."""
        if not tokens:
            return
        n, old = len(tokens), self.output
        chars = token_char_ids(list(tokens), self.config.max_chars_per_token).to(self.token_chars.device)
        self.token_chars = torch.cat([self.token_chars, chars], 0)
        new = nn.Linear(old.in_features, old.out_features + n, device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            new.weight[old.out_features:] = 0.0
            new.bias[: old.out_features] = old.bias
            new.bias[old.out_features:] = float(old.bias.min()) if bias is None else bias
        self.output = new
        self.config.vocab_size += n

    def get_input_embeddings(self) -> nn.Embedding:
        """The character embedding (ELMo has no token embedding table)."""
        return self.char_cnn.char_embed

    def embedding_parameters(self):
        return list(self.char_cnn.parameters())

    def layer_modules(self):
        return [nn.ModuleList([f, b]) for f, b in zip(self.forward_layers, self.backward_layers)]

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Softmax layer; a (..., 2P) [forward; backward] input uses its forward half (next-token logits)."""
        P = self.config.projection_size
        return self.output(hidden[..., :P] if hidden.shape[-1] == 2 * P else hidden)

    @staticmethod
    def _reverse(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Reverse each row's first ``lengths[b]`` steps (padding stays at the end)."""
        B, T = x.shape[:2]
        idx = torch.arange(T, device=x.device)[None, :].expand(B, T)
        rev = lengths[:, None] - 1 - idx
        rev = torch.where(rev >= 0, rev, idx)  # (B, T)
        return torch.gather(x, 1, rev.view(B, T, *([1] * (x.dim() - 2))).expand_as(x))

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        """Token reps x (B,T,P), forward layers [f_1..f_L], backward layers [b_1..b_L] (in original order)."""
        _check_ids(self, input_ids)
        B, T = input_ids.shape
        if attention_mask is not None and attention_mask.dim() > 2:
            raise UserError("elmo takes a (B, T) padding mask only")
        lengths = (attention_mask.long().sum(1) if attention_mask is not None
                   else torch.full((B,), T, dtype=torch.long, device=input_ids.device))
        x = self.char_cnn(self.token_chars[input_ids])  # (B, T, P)
        outs = {}
        for name, layers, seq in (("f", self.forward_layers, x), ("b", self.backward_layers, self._reverse(x, lengths))):
            h, reps = self.drop(seq), []
            for i, lstm in enumerate(layers):
                y, _ = lstm(h)  # (B, T, P)
                if i > 0:  # residual connection between LSTM layers
                    y = y + h
                reps.append(y)
                h = self.drop(y)
            outs[name] = reps
        bwd = [self._reverse(r, lengths) for r in outs["b"]]
        return x, outs["f"], bwd

    def layer_representations(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                              ) -> list[torch.Tensor]:
        """L + 1 tensors (B, T, 2P): [x; x], [f_1; b_1], ..., [f_L; b_L] (what ``ScalarMix`` mixes)."""
        x, f, b = self._run(input_ids, attention_mask)
        return [torch.cat([x, x], -1)] + [torch.cat([fi, bi], -1) for fi, bi in zip(f, b)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels_mask: torch.Tensor | None = None, output_hidden_states: bool = False,
                past_key_values: Any = None, use_cache: bool = False) -> RecurrentOutput:
        if past_key_values is not None or use_cache:
            raise UserError("elmo is bidirectional: no incremental decoding cache")
        x, f, b = self._run(input_ids, attention_mask)
        top = torch.cat([f[-1], b[-1]], -1)  # (B, T, 2P)
        logits = back = None
        if self.config.head:
            if labels_mask is not None:
                logits = self.output(f[-1][labels_mask])
            else:
                logits, back = self.output(self.drop(f[-1])), self.output(self.drop(b[-1]))
        hs = None
        if output_hidden_states:
            hs = tuple([torch.cat([x, x], -1)] + [torch.cat([fi, bi], -1) for fi, bi in zip(f, b)])
        return RecurrentOutput(last_hidden_state=top, logits=logits, hidden_states=hs, backward_logits=back)


# ----------------------------------------------------------------------------- CoVe
class CoVe(RecurrentLM):
    """The MT-LSTM of CoVe (McCann et al. 2017): an attentional LSTM encoder-decoder translation model whose
    encoder outputs are the context vectors.

    - encoder: token embeddings (E) -> ``num_layers`` bidirectional LSTM layers (``hidden_size`` per
      direction; padding is packed away, so each row's backward pass starts at its own last token);
      CoVe(w) = the top layer's outputs (B, S, 2H) (``last_hidden_state``);
    - decoder: target embeddings -> ``num_layers`` LSTM layers of 2H, initialised from nothing (zeros);
      at step t, attention alpha_t = softmax_s(H_s . (W1 h_t + b1)) over the (unpadded) encoder outputs
      H, h~_t = tanh(W2 [H^T alpha_t; h_t] + b2), and a softmax over the vocabulary from h~_t (the paper's
      equations without input feeding, so the decoder LSTM runs over the whole target at once).

    ``forward(input_ids, attention_mask, decoder_input_ids=None, decoder_attention_mask=None, labels_mask=None)``:
    without decoder ids only the encoder runs (``logits`` None); with them ``logits`` are (B, U, V), or
    (N, V) at ``labels_mask`` (the seq2seq objectives' interface), and ``attentions`` (B, U, S).
    Source and target share one tokenizer (one vocabulary); the two embeddings are separate.
    """

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        c = config
        H = c.hidden_size
        self.embed = nn.Embedding(c.vocab_size, c.embedding_size)
        self.encoder = nn.ModuleList(nn.LSTM(c.embedding_size if i == 0 else 2 * H, H, batch_first=True,
                                             bidirectional=True) for i in range(c.num_layers))
        self.dec_embed = nn.Embedding(c.vocab_size, c.embedding_size)
        self.decoder = nn.LSTM(c.embedding_size, 2 * H, num_layers=c.num_layers, batch_first=True,
                               dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.attn_query = nn.Linear(2 * H, 2 * H)  # W1, b1
        self.attn_out = nn.Linear(4 * H, 2 * H)  # W2, b2
        self.drop = Dropout(c.dropout)
        self.output = nn.Linear(2 * H, c.vocab_size)
        self._init_uniform()

    def embedding_parameters(self):
        return [self.embed.weight, self.dec_embed.weight]

    def layer_modules(self):
        return list(self.encoder) + [self.decoder]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(hidden)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Outputs of every encoder layer, each (B, S, 2H) [forward; backward], zeros at padding."""
        _check_ids(self, input_ids)
        B, S = input_ids.shape
        if attention_mask is not None and attention_mask.dim() > 2:
            raise UserError("cove takes a (B, S) padding mask only")
        lengths = (attention_mask.long().sum(1) if attention_mask is not None
                   else torch.full((B,), S, dtype=torch.long, device=input_ids.device))
        if bool((lengths < 1).any()):
            raise UserError("cove: every source sentence needs at least one token")
        h, outs = self.drop(self.embed(input_ids)), []
        for lstm in self.encoder:
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, _ = lstm(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=S)
            outs.append(y)
            h = self.drop(y)
        return outs

    def decode(self, enc: torch.Tensor, src_mask: torch.Tensor | None, decoder_input_ids: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attentional states h~ (B, U, 2H) and attention weights (B, U, S) for teacher-forced targets."""
        _check_ids(self, decoder_input_ids)
        h, _ = self.decoder(self.drop(self.dec_embed(decoder_input_ids)))  # (B, U, 2H)
        scores = torch.einsum("bsd,bud->bus", enc, self.attn_query(h))  # (B, U, S)
        if src_mask is not None:
            scores = scores.masked_fill(~src_mask.bool()[:, None, :], float("-inf"))
        alpha = torch.softmax(scores.float(), -1).to(enc.dtype)
        ctx = torch.einsum("bus,bsd->bud", alpha, enc)
        return torch.tanh(self.attn_out(torch.cat([ctx, h], -1))), alpha

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels_mask: torch.Tensor | None = None, output_hidden_states: bool = False,
                past_key_values: Any = None, use_cache: bool = False,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None
                ) -> RecurrentOutput:
        if past_key_values is not None or use_cache:
            raise UserError("cove: no incremental decoding cache (it is trained with teacher forcing)")
        outs = self.encode(input_ids, attention_mask)
        enc = outs[-1]
        logits = alpha = None
        if decoder_input_ids is not None:
            h, alpha = self.decode(enc, attention_mask, decoder_input_ids)
            if self.config.head:
                logits = self._select(self.head_logits, self.drop(h), labels_mask)
        hs = None
        if output_hidden_states:
            hs = tuple([self.embed(input_ids)] + outs)
        return RecurrentOutput(last_hidden_state=enc, logits=logits, hidden_states=hs, attentions=alpha)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        raise UserError("cove is a translation model used for its encoder: see plmkit.classic.recurrent.CoVe")


# ----------------------------------------------------------------------------- build / load
MODEL_CLASSES = {"ffnn": FFNNLM, "rnn": RNNLM, "lstm": RNNLM, "elmo": ELMo, "cove": CoVe}


def build(name_or_config: str | RecurrentConfig | dict, **overrides: Any) -> RecurrentLM:
    """A randomly initialised model from a preset name, a ``RecurrentConfig`` or a dict of fields.

    ``overrides`` change config fields (``build("lstm-small", vocab_size=len(tok))``); unknown
    keys raise ``UserError`` with a did-you-mean hint.
    """
    if isinstance(name_or_config, str):
        if name_or_config not in PRESETS:
            raise UserError(f"unknown recurrent model preset {name_or_config!r}{suggest(name_or_config, PRESETS)}; "
                            f"expected one of {', '.join(PRESETS)}")
        cfg = RecurrentConfig.from_dict({**PRESETS[name_or_config], **overrides}, source=name_or_config)
    elif isinstance(name_or_config, dict):
        cfg = RecurrentConfig.from_dict({**name_or_config, **overrides})
    else:
        cfg = name_or_config.replace(**overrides) if overrides else name_or_config
    model = MODEL_CLASSES[cfg.family](cfg)
    if isinstance(name_or_config, str):
        model.name = name_or_config
    return model
