"""Looking inside a model and attacking it (issue 21): contextuality, layer-wise probes, attention, BERT-Attack.

- ``features``: word-level hidden states per layer (sub-word pieces mean-pooled).
- ``contextuality``: Ethayarajh 2019 statistics per layer.
- ``probes``: linear / MLP probes on frozen per-layer features with Hewitt & Liang control tasks.
- ``attention``: attention maps, an HTML head view, Clark et al. 2019 per-head statistics, syntax-like heads.
- ``attack``: BERT-Attack (Li et al. 2020) with MLM or word-embedding substitutes; adversarial training.
"""
