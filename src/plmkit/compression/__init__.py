"""Model compression: task distillation, quantization and structured / unstructured pruning.

- :mod:`plmkit.compression.losses`: the distillation losses (KD-CE with temperature, hidden-state cosine,
  TinyBERT's embedding / attention / hidden MSE, BERT-PKD's patient loss, MiniLM's attention and value
  relation transfer) and the per-layer attention internals they read.
- :mod:`plmkit.compression.distill`: ``plm distill`` (a fine-tuned teacher -> a smaller student checkpoint).
- :mod:`plmkit.compression.quantization`: ``plm quantize`` (dynamic int8, weight-only int8 / int4).
- :mod:`plmkit.compression.pruning`: ``plm prune`` (head and FFN-neuron pruning by importance, magnitude).
- :mod:`plmkit.compression.structure`: what a compressed checkpoint records in ``task.json["compression"]``
  and how a freshly built model is reshaped to it before its weights load (``tasks.checkpoint`` calls it).

Every compressed model is saved as a normal fine-tuned checkpoint (``plmkit.tasks.checkpoint``), so
``plm evaluate --checkpoint DIR`` / ``plm predict`` read it. Nothing is imported here eagerly.
"""
