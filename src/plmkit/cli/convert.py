"""``plm convert SRC OUT_DIR``: a GGUF file or HF-format directory -> an HF-format safetensors directory;
``plm convert SRC_DIR OUT.gguf --to gguf``: an HF-format llama / gpt2 directory -> a GGUF file.

The model goes through plmkit (``plmkit.interop.convert``): read, checked against the family's
name map, written as ``config.json`` + ``model.safetensors`` (+ ``generation_config.json``), with
the tokenizer when the source carries one (copied from an HF directory; rebuilt from GGUF metadata
by transformers). A non-empty OUT_DIR is refused unless ``--overwrite``.

``--to gguf`` (``plmkit.interop.gguf_export``) writes a llama.cpp file with the ``gguf`` package:
the weights as float32, float16 or q8_0 (``--dtype``; auto = float32), the byte-level BPE
tokenizer and the chat template from the directory. An existing OUT.gguf needs ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys

HELP = "Convert GGUF or HF-format checkpoints into an HF-format directory or (--to gguf) a GGUF file."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="a .gguf file (llama or gpt2 architecture) or an HF-format model "
                   "directory")
    p.add_argument("out_dir", metavar="OUT", help="output directory (must be empty or absent), or OUT.gguf with "
                   "--to gguf")
    p.add_argument("--to", choices=["hf", "gguf"], default=None,
                   help="output format: hf (a safetensors directory) or gguf (a llama.cpp file; SRC must be an "
                   "HF-format llama or gpt2 directory). Default: gguf when OUT ends in .gguf, else hf")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR (or an existing OUT.gguf)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "q8_0"],
                   help="dtype of the written tensors. hf: auto (as stored; GGUF is de-quantized to float32), "
                   "float32, bfloat16, float16. gguf: auto (= float32), float32, float16, q8_0 (matrices whose rows "
                   "are a multiple of 32 values; norms and biases stay float32)")
    p.add_argument("--no-tokenizer", action="store_true", help="do not write the tokenizer")


def run(args: argparse.Namespace) -> int:
    import warnings

    from plmkit.errors import UserError
    from plmkit.interop import convert

    to = args.to or ("gguf" if str(args.out_dir).lower().endswith(".gguf") else "hf")
    if to == "gguf":
        from plmkit.interop.gguf_export import export_gguf

        dtype = "float32" if args.dtype == "auto" else args.dtype
        if dtype == "bfloat16":
            raise UserError("--to gguf: --dtype must be auto, float32, float16 or q8_0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = export_gguf(args.src, args.out_dir, dtype=dtype, overwrite=args.overwrite,
                               tokenizer=not args.no_tokenizer)
        tok = "byte-level BPE" + (" + chat template" if info["chat_template"] else "") if info["tokenizer"] else "none"
        print(f"wrote {info['out']}: {info['model_type']}, {info['num_parameters'] / 1e6:.1f}M parameters, "
              f"{info['num_tensors']} tensors, {dtype}, {info['bytes'] / 2**20:.1f} MiB in {info['seconds']:.1f}s; "
              f"tokenizer: {tok}")
        return 0
    if args.dtype == "q8_0":
        raise UserError("--dtype q8_0 is for --to gguf; an HF directory takes auto, float32, bfloat16 or float16")
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
