"""Tokenizers: train and load WordPiece, byte-level BPE, Unigram and char tokenizers.

``load_tokenizer(path)`` reads tokenizer.json / an HF directory / vocab.txt / vocab.json+merges.txt;
``train_tokenizer(files, kind=..., vocab_size=...)`` trains one with the HF ``tokenizers`` trainers.
Both return a ``Tokenizer`` (see ``tokenizer.py``); word boundaries for whole-word masking
(jieba words for Chinese) and the sentence splitter live in ``words.py``.
"""

from plmkit.tokenization.tokenizer import DEFAULT_SPECIALS, KINDS, ROLES, Tokenizer, load_tokenizer
from plmkit.tokenization.train import train_tokenizer, train_tokenizer_from_iterator
from plmkit.tokenization.words import sentence_starts, word_ids_for

__all__ = [
    "DEFAULT_SPECIALS", "KINDS", "ROLES", "Tokenizer", "load_tokenizer", "train_tokenizer",
    "train_tokenizer_from_iterator", "sentence_starts", "word_ids_for",
]
