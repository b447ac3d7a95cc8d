"""Corpus pipeline: streaming readers (``corpus.py``) and the sharded memory-mapped token store (``store.py``).

```python
from plmkit.data import TokenStore, prepare
prepare(["corpus.txt"], tok, "store/")     # -> manifest dict; store/manifest.json
store = TokenStore("store/")
store.windows(128)[0]                      # {"input_ids", "word_ids", "sentence_starts", "doc_boundaries"}
```
Task dataset readers (GLUE, CoNLL, SQuAD) live in ``plmkit.tasks``.
"""

from plmkit.data.corpus import CorpusConfig, CorpusStats, expand_inputs, iter_documents
from plmkit.data.store import Documents, SentencePairs, TokenStore, View, Windows, choose_dtype, prepare

__all__ = [
    "CorpusConfig", "CorpusStats", "expand_inputs", "iter_documents", "Documents", "SentencePairs",
    "TokenStore", "View", "Windows", "choose_dtype", "prepare",
]
