"""What a language model knows and where (issue 16); conventions and results in docs/KNOWLEDGE.md.

- ``structure``: the layers / attention / MLP / final norm / head of any plmkit Transformer, and hooks.
- ``lama`` (+ ``lama_data``, ``lama_seq2seq``): LAMA probing (Petroni et al. 2019) of MLMs, causal
  LMs and T5 / BART encoder-decoders, LAMA-UHN, per-layer readout.
- ``trace``: causal tracing (Meng et al. 2022).
- ``neurons``: knowledge neurons by integrated gradients, and their edits (Dai et al. 2022).
- ``ffn_memories``: FFN layers as key-value memories (Geva et al. 2021).

Command line: ``plm probe lama``, ``plm trace``, ``plm neurons find|edit``, ``plm probe ffn-memories``.
"""

from plmkit.knowledge.structure import ModelStructure, intervene, locate

__all__ = ["ModelStructure", "intervene", "locate"]
