"""Every decoding mode of ``plm generate`` (greedy and sampling stream, beam search prints at the end)
for a decoder-only and an encoder-decoder model saved to disk: the printed text is exactly what
the library's ``generate`` returns for the same arguments and seed (issue 24: an encoder-decoder with
``--num-beams 2`` printed nothing, the CLI cut its output as if it were prompt + continuation)."""

from __future__ import annotations

import pytest
import torch

from plmkit.cli.main import main
from plmkit.models import load
from plmkit.tokenization import load_tokenizer, train_tokenizer_from_iterator

TEXT = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat and the log"] * 20
PROMPT = "the cat sat"

MODES = {
    "greedy": [],
    "greedy-ignore-eos": ["--ignore-eos"],
    "sample": ["--do-sample", "--seed", "3"],
    "sample-top-k-temperature": ["--do-sample", "--top-k", "5", "--temperature", "0.7", "--seed", "4"],
    "sample-top-p": ["--do-sample", "--top-p", "0.8", "--seed", "5"],
    "sample-all": ["--do-sample", "--top-k", "8", "--top-p", "0.9", "--temperature", "1.3", "--seed", "6",
                   "--repetition-penalty", "1.2"],
    "beam-2": ["--num-beams", "2"],
    "beam-3-ignore-eos": ["--num-beams", "3", "--ignore-eos"],
}


@pytest.fixture(scope="module", params=["decoder", "encoder-decoder"])
def model_dir(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    if request.param == "decoder":
        tok = train_tokenizer_from_iterator(TEXT, kind="bpe", style="gpt2", vocab_size=300, min_frequency=1)
        model = load("gpt2-tiny", vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    else:
        from plmkit.models import presets

        tok = train_tokenizer_from_iterator(TEXT, kind="unigram", vocab_size=60, sentinels=0)
        assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)  # T5's pad = decoder start, </s>
        model = presets.build("t5-tiny", vocab_size=len(tok))
        with torch.no_grad():  # large random weights: an untrained T5 would emit <pad> forever
            for n, p in model.named_parameters():
                if "norm" not in n:
                    p.normal_(0.0, 1.0)
            # zero logits for <pad> </s> <unk> (tied head): the random best token is a real piece, so
            # the continuation is never empty by chance
            for w in {id(model.shared.weight): model.shared.weight, id(model.head.decoder.weight):
                      model.head.decoder.weight}.values():
                w[:3] = 0.0
    model.save_pretrained(d)
    tok.save(d)
    return d


def _expected(d, args: list[str]) -> str:
    """The library call the CLI should make, decoded the way the CLI should print it."""
    model = load(str(d)).eval()
    tok = load_tokenizer(d)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    ids = tok.encode(PROMPT, add_special_tokens=seq2seq)  # an encoder-decoder's source ends in </s>

    def opt(name, default, cast):
        return cast(args[args.index(name) + 1]) if name in args else default

    kw = dict(max_new_tokens=8, do_sample="--do-sample" in args, temperature=opt("--temperature", 1.0, float),
              top_k=opt("--top-k", 0, int), top_p=opt("--top-p", 1.0, float), num_beams=opt("--num-beams", 1, int),
              repetition_penalty=opt("--repetition-penalty", 1.0, float),
              eos_token_id=[] if "--ignore-eos" in args else model.config.eos_token_id)
    if "--seed" in args:
        torch.manual_seed(opt("--seed", 0, int))
    out = model.generate(torch.tensor([ids]), **kw)[0]
    new = out[1:] if seq2seq else out[len(ids):]
    if seq2seq:
        assert out[0].item() == model.config.decoder_start_token_id
    else:
        assert out[: len(ids)].tolist() == ids
    assert len(new) >= 1
    if "--ignore-eos" in args:
        assert len(new) == 8
    return tok.decode(new.tolist(), skip_special_tokens=True)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_decoding_mode_prints_the_library_output(model_dir, mode, capsys):
    args = MODES[mode]
    assert main(["generate", str(model_dir), PROMPT, "--max-new-tokens", "8", "--precision", "fp32", *args]) == 0
    printed = capsys.readouterr().out
    want = _expected(model_dir, args)
    assert want.strip(), "the tiny model's continuation is empty: the comparison would prove nothing"
    assert printed == want + "\n"


def test_streaming_writes_as_tokens_arrive(model_dir, capsys, monkeypatch):
    """Greedy and sampling stream through TextStreamer (one put per token); beam search does not."""
    import plmkit.generation as generation

    puts: list[int] = []
    real = generation.TextStreamer

    class Spy(real):
        def put(self, tokens):
            puts.append(int(tokens.reshape(-1)[0]))
            super().put(tokens)

    monkeypatch.setattr(generation, "TextStreamer", Spy)
    assert main(["generate", str(model_dir), PROMPT, "--max-new-tokens", "8", "--precision", "fp32", "--ignore-eos"]) == 0
    assert len(puts) == 8
    assert capsys.readouterr().out == _expected(model_dir, ["--ignore-eos"]) + "\n"
    puts.clear()
    assert main(["generate", str(model_dir), PROMPT, "--max-new-tokens", "8", "--num-beams", "2"]) == 0
    assert puts == [] and capsys.readouterr().out.strip()


def test_echo_prints_the_prompt_first(model_dir, capsys):
    assert main(["generate", str(model_dir), PROMPT, "--max-new-tokens", "4", "--num-beams", "2", "--echo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(PROMPT) and len(out) > len(PROMPT) + 1
