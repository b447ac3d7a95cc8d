"""A tiny test double for the trainer: a 2-layer causal Transformer LM and a CLM-like objective.

They follow docs/CONTRACTS.md (forward returning ``.logits``, ``layer_groups()``, ``save_pretrained``;
``make_batch`` / ``loss`` with randomness from torch's global RNG) so the trainer is tested independently
of the real model families. Run as a script it is the subprocess used by the kill-and-resume and the
torchrun tests::

    python tests/training/tiny.py OUT --steps 30 --grad-accum 2 --save-every 5 [--resume] [--hang-at 17]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

VOCAB = 24


@dataclass
class Output:  # a dataclass, like the real models' output (FSDP2 walks dataclasses to find tensors)
    last_hidden_state: torch.Tensor
    logits: torch.Tensor


class TinyLM(nn.Module):
    def __init__(self, vocab: int = VOCAB, hidden: int = 32, layers: int = 2, dropout: float = 0.1, max_len: int = 64):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, hidden_size=hidden)
        self.embed = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(max_len, hidden)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden, 2, 2 * hidden, dropout=dropout, batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)
        self.num_layers = layers

    def forward(self, input_ids, attention_mask=None, **_):
        B, T = input_ids.shape
        h = self.embed(input_ids) + self.pos(torch.arange(T, device=input_ids.device))  # (B, T, H)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=input_ids.device)
        for layer in self.layers:
            h = layer(h, src_mask=causal, is_causal=True)
        h = self.norm(h)
        return Output(last_hidden_state=h, logits=self.head(h))

    def layer_groups(self):
        return [list(self.embed.parameters()) + list(self.pos.parameters()),
                *[list(l.parameters()) for l in self.layers],
                list(self.norm.parameters()) + list(self.head.parameters())]

    def save_pretrained(self, out_dir):
        from safetensors.torch import save_model

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(vars(self.config)))
        save_model(self, str(out / "model.safetensors"))


class TinyCLM:
    """Next-token prediction on a random crop of each window (exercises the global RNG in make_batch)."""

    name = "clm"
    example_kind = "window"

    def __init__(self, crop: int = 12):
        self.crop = crop

    def prepare(self, model):
        return None

    def make_batch(self, examples):
        ids = torch.tensor([e["input_ids"] if isinstance(e, dict) else e for e in examples])  # (B, L)
        start = int(torch.randint(0, ids.shape[1] - self.crop + 1, ()))
        x = ids[:, start:start + self.crop]
        return {"input_ids": x[:, :-1].contiguous(), "labels": x[:, 1:].contiguous()}

    def loss(self, model, batch):
        logits = model(batch["input_ids"]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1))
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        return loss, {"accuracy": float(acc)}


def make_data(n: int = 96, length: int = 16, seed: int = 0) -> list[dict]:
    """Learnable sequences: arithmetic progressions mod VOCAB with a random start and a step of 1 or 3."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a = int(torch.randint(0, VOCAB, (), generator=g))
        d = 1 + 2 * int(torch.randint(0, 2, (), generator=g))  # step 1 or 3
        out.append({"input_ids": [(a + d * i) % VOCAB for i in range(length)]})
    return out


def main(argv=None) -> int:
    from plmkit.config import TrainConfig
    from plmkit.training import Trainer
    from plmkit.training import distributed as D

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--save-every", type=int, default=5)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hang-at", type=int, default=0, help="sleep forever after this step (to be killed)")
    p.add_argument("--distributed", default="auto")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--crop", type=int, default=12, help="16 = whole windows (no random crop)")
    a = p.parse_args(argv)
    D.init_distributed()
    torch.manual_seed(0)
    model = TinyLM(dropout=a.dropout)
    cfg = TrainConfig(max_steps=a.steps, batch_size=a.batch_size, grad_accum=a.grad_accum, lr=a.lr,
                      warmup_steps=3, schedule="cosine", save_every=a.save_every, log_every=1, eval_every=10,
                      eval_batches=3, keep_last=2, seed=3, clip_grad_norm=a.clip, distributed=a.distributed, progress=False,
                      tensorboard=False, plots=False)
    trainer = Trainer(model, TinyCLM(a.crop), make_data(), cfg, out_dir=a.out, eval_data=make_data(16, seed=1))
    if a.hang_at:
        def hang(tr, step):
            if step == a.hang_at:
                Path(a.out, "HANGING").write_text(str(step))
                while True:
                    time.sleep(1)
        trainer.add_callback("on_step_end", hang)
    summary = trainer.fit(resume=a.resume)
    if D.current().is_main:
        Path(a.out, "summary.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
