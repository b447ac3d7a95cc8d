"""What a language model knows and where (issue 16).

- ``structure``: the layers / attention / MLP / final norm / head of any plmkit Transformer, and hooks.
- ``lama``: LAMA probing (Petroni et al. 2019) for MLMs and causal LMs, LAMA-UHN, per-layer readout.

Command line: ``plm probe lama`` (``plmkit.cli.probe``).
"""

from plmkit.knowledge.structure import ModelStructure, intervene, locate

__all__ = ["ModelStructure", "intervene", "locate"]
