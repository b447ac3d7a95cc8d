"""``plm convert SRC OUT_DIR``: a GGUF file or HF-format directory -> an HF-format safetensors directory.

The model goes through plmkit (``plmkit.interop.convert``): read, checked against the family's
name map, written as ``config.json`` + ``model.safetensors`` (+ ``generation_config.json``), with
the tokenizer when the source carries one (copied from an HF directory; rebuilt from GGUF metadata
by transformers). A non-empty OUT_DIR is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys

HELP = "Convert a GGUF file or HF-format directory into an HF-format safetensors directory."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="a .gguf file (llama architecture) or an HF-format model directory")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of the written tensors (auto: as stored; GGUF is de-quantized to float32)")
    p.add_argument("--no-tokenizer", action="store_true", help="do not write the tokenizer")


def run(args: argparse.Namespace) -> int:
    import warnings

    from plmkit.interop import convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collected by convert() and printed below as one line each
        info = convert(args.src, args.out_dir, overwrite=args.overwrite, dtype=args.dtype,
                       tokenizer=not args.no_tokenizer)
    for w in info["warnings"]:
        print(f"plm convert: warning: {w}", file=sys.stderr)
    tok = ", ".join(info["tokenizer_files"]) if info["tokenizer_files"] else "none"
    print(f"wrote {info['out_dir']}: {info['architecture']} ({info['model_type']}), "
          f"{info['num_parameters'] / 1e6:.1f}M parameters, {info['dtype']}; tokenizer: {tok}")
    return 0
