"""``plm generate``: continue a prompt with a causal LM (or decode an encoder-decoder's output for a
source text), streaming the text to stdout.

    plm generate path/to/model "Once upon a time" --max-new-tokens 50
    echo "Once upon a time" | plm generate model.gguf --do-sample --top-p 0.9 --seed 0

The model is a preset name, an HF-format directory or a GGUF file; the tokenizer comes from the
model directory (or the GGUF metadata) unless ``--tokenizer`` names one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from plmkit.checks import NON_NEGATIVE, POSITIVE, PROBABILITY_MASS, arg

HELP = "Generate text from a causal LM or an encoder-decoder (greedy, sampling, beam search), streaming."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="preset name, HF-format model directory, .gguf file, or a plm finetune checkpoint "
                   "that kept its causal LM head (--verbalizer: generation with its soft prompt / LoRA applied)")
    p.add_argument("prompt", nargs="?", default=None, help="prompt text ('-' or omitted: read stdin)")
    p.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model directory / GGUF file)")
    p.add_argument("--max-new-tokens", type=arg(int, POSITIVE), default=50, help="number of tokens to generate at most")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=arg(float, POSITIVE), default=1.0, help="sampling temperature")
    p.add_argument("--top-k", type=arg(int, NON_NEGATIVE), default=0, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=arg(float, PROBABILITY_MASS), default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--num-beams", type=arg(int, POSITIVE), default=1, help="beam search width (1: no beam search)")
    p.add_argument("--repetition-penalty", type=arg(float, POSITIVE), default=1.0, help="CTRL repetition penalty (1: off)")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at the end-of-sequence token")
    p.add_argument("--add-special-tokens", action="store_true",
                   help="let the tokenizer add its special tokens (e.g. BOS) to the prompt (always on for an "
                   "encoder-decoder's source)")
    p.add_argument("--echo", action="store_true", help="print the prompt before the continuation (the output, "
                   "for an encoder-decoder)")
    p.add_argument("--seed", type=arg(int, NON_NEGATIVE), default=None, help="random seed for sampling")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16: the model's weights in bfloat16 (half the memory traffic; products in bf16); auto: "
                        "bf16 on CPUs that multiply bf16 natively (AMX or AVX-512 BF16), fp32 elsewhere; the choice is "
                        "printed on stderr")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="= --precision bf16")
    p.add_argument("--gguf-int4", choices=["off", "fp32", "bf16"], default="off",
                   help="a .gguf model: run its Q4_0 / Q4_1 weights as stored (int4 blocks of 32, ATen's int4 CPU "
                        "kernel) with fp32 or bf16 activations instead of de-quantizing them (fp32: same numbers, "
                        "slow on CPU; bf16: faster than fp32 decoding, bf16 rounding; docs/COMPRESSION.md)")
    p.add_argument("--pack-weights", choices=["auto", "on", "off"], default="auto",
                   help="Transformers: decode with cached transposed copies of the weights (faster on CPU, one extra "
                        "copy of the decoder weights in memory); auto: on when the parameters take <= 2 GiB")


def resolve_tokenizer(model_arg: str, tokenizer_arg: str | None) -> Any:
    """``--tokenizer``, else the model directory's tokenizer, else the GGUF's; UserError if none."""
    from plmkit.errors import UserError

    if tokenizer_arg:
        from plmkit import load_tokenizer

        return load_tokenizer(tokenizer_arg)
    path = Path(model_arg)
    if path.is_dir():
        from plmkit import load_tokenizer

        try:
            return load_tokenizer(path)
        except UserError as e:
            raise UserError(f"{path}: no usable tokenizer in the model directory ({e}); pass --tokenizer") from None
    if path.is_file() and path.suffix.lower() == ".gguf":
        from plmkit.interop.gguf import load_gguf_tokenizer

        return load_gguf_tokenizer(path)
    raise UserError(f"{model_arg!r} is a preset without a tokenizer; pass --tokenizer PATH")


def _load_model(path: str):
    """A model, or a ``plm finetune`` checkpoint that kept its causal LM head (``--verbalizer`` with a soft
    prompt, LoRA, ...): its base model with the trained parameters, the soft prompt applied to generation."""
    from pathlib import Path

    from plmkit.errors import UserError
    from plmkit.models import load

    if not (Path(path) / "task.json").is_file():
        return load(path).eval()
    from plmkit.tasks.checkpoint import load_checkpoint

    model, _, info, _ = load_checkpoint(path)
    if getattr(model, "head", None) is None or getattr(model.config, "head", None) != "lm":
        raise UserError(f"{path}: this fine-tuned checkpoint ({info['task']}, mode {info['mode']}) has a task head "
                        "and no causal LM head to generate with; only checkpoints trained with --verbalizer on a "
                        "causal LM keep it")
    return model.eval()


def read_prompt(arg: str | None) -> str:
    from plmkit.errors import UserError

    from plmkit.textio import read_stdin

    text = read_stdin() if arg in (None, "-") else arg
    text = text.rstrip("\n")
    if not text:
        raise UserError("empty prompt (give it as an argument or on stdin)")
    return text


def generation_dtype(precision: str):
    """torch dtype for ``--precision`` (auto: bf16 where the CPU multiplies bf16 natively), said on stderr."""
    import torch

    from plmkit.models.kernels import resolve_precision

    return torch.bfloat16 if resolve_precision(precision, "plm generate") == "bf16" else torch.float32


def run(args: argparse.Namespace) -> int:
    import torch

    from plmkit.errors import UserError
    from plmkit.generation import TextStreamer

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    prompt = read_prompt(args.prompt)
    model = _load_model(args.model)  # first: a missing path or unknown preset gets load's precise message
    if args.gguf_int4 != "off":
        if Path(args.model).suffix.lower() != ".gguf":
            raise UserError(f"--gguf-int4 {args.gguf_int4}: {args.model} is not a .gguf file")
        from plmkit.compression.gguf_quant import keep_gguf_quantized
        from plmkit.compression.quantization import set_activations

        keep_gguf_quantized(model, args.model)
        set_activations(model, "bfloat16" if args.gguf_int4 == "bf16" else "float32")
    extra: dict[str, Any] = {}
    if args.pack_weights != "auto":
        from plmkit.classic.recurrent import RecurrentLM

        if isinstance(model, RecurrentLM):
            raise UserError(f"--pack-weights {args.pack_weights}: applies to Transformer models, "
                            f"not to the recurrent {model.config.family} LM")
        extra["pack_weights"] = args.pack_weights == "on"
    tok = resolve_tokenizer(args.model, args.tokenizer)
    if args.gguf_int4 != "off":
        if args.precision == "bf16":
            raise UserError("--precision bf16 / --bf16 and --gguf-int4: choose one (--gguf-int4 bf16 already runs "
                            "the kept int4 weights with bf16 activations)")
    elif generation_dtype(args.precision) == torch.bfloat16:
        model = model.to(torch.bfloat16)
    # an encoder-decoder returns decoder tokens only (start token first), and its source is encoded as
    # in training, special tokens included (T5: "... </s>"); a decoder returns prompt + continuation
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    ids = tok.encode(prompt, add_special_tokens=args.add_special_tokens or seq2seq)
    if not ids:
        raise UserError("the prompt encodes to no tokens")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    eos: Any = []  # no stop token (None would mean "the config's" to an encoder-decoder)
    if not args.ignore_eos:
        eos = model.config.eos_token_id if model.config.eos_token_id is not None else getattr(tok, "eos_token_id", None)
    if args.echo:
        sys.stdout.write(prompt + ("\n" if seq2seq else ""))
        sys.stdout.flush()
    streamer = TextStreamer(tok, out=sys.stdout) if args.num_beams == 1 else None
    out = model.generate(torch.tensor([ids]), max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         num_beams=args.num_beams, repetition_penalty=args.repetition_penalty,
                         eos_token_id=eos, streamer=streamer, **extra)
    if streamer is None:
        print(tok.decode(out[0, 1 if seq2seq else len(ids):].tolist(), skip_special_tokens=True))
    return 0
