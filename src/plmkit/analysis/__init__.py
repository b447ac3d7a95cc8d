"""Looking inside a model and attacking it (issue 21): contextuality, layer-wise probes, BERT-Attack.

- ``features``: word-level hidden states per layer (sub-word pieces mean-pooled).
- ``contextuality``: Ethayarajh 2019 statistics per layer.
- ``probes``: linear probes on frozen per-layer features with Hewitt & Liang control tasks.
- ``attack``: BERT-Attack (Li et al. 2020) with MLM or word-embedding substitutes.
"""
