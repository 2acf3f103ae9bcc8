"""A word-level tokenizer for the ShapeWorld vocabulary.

Ids: ``<pad>`` = 0, ``<unk>`` = 1, ``<sot>`` = 2, then the words in sorted order, then
``<eot>`` as the largest id. open_clip's text tower pools the feature at
``argmax(token_ids)``, which is therefore the end-of-text token, exactly as with
open_clip's own BPE tokenizer.

Unknown words are never dropped silently: ``on_unknown="raise"`` (the default) raises
a ``KeyError`` naming them; ``on_unknown="unk"`` maps them to ``<unk>``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..data.shapeworld import split_words, vocabulary

PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<sot>", "<eot>"
ON_UNKNOWN = ("raise", "unk")


class WordTokenizer:
    """Callable like open_clip's tokenizers: ``tokenizer(texts) -> LongTensor [B, L]``.

    Args:
        words: the vocabulary (defaults to :func:`course_lib.data.vocabulary`).
        context_length: ``L``, including ``<sot>`` and ``<eot>``.
        on_unknown: ``"raise"`` or ``"unk"``.
    """

    def __init__(
        self,
        words: Iterable[str] | None = None,
        context_length: int = 24,
        on_unknown: str = "raise",
    ) -> None:
        words = sorted(set(words if words is not None else vocabulary()))
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3, got {context_length}")
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
        specials = {PAD, UNK, SOT, EOT}
        if specials & set(words):
            raise ValueError(f"the vocabulary must not contain the special tokens {sorted(specials)}")
        self.itos: list[str] = [PAD, UNK, SOT, *words, EOT]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        self.context_length = context_length
        self.on_unknown = on_unknown

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        return self.stoi[PAD]

    @property
    def eot_id(self) -> int:
        return self.stoi[EOT]

    @property
    def sot_id(self) -> int:
        return self.stoi[SOT]

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` that are not in the vocabulary."""
        return [w for w in split_words(text) if w not in self.stoi]

    def encode(self, text: str, on_unknown: str | None = None) -> list[int]:
        """Ids of ``text`` without ``<sot>``/``<eot>``."""
        if not isinstance(text, str):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        mode = on_unknown or self.on_unknown
        if mode not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {mode!r}")
        words = split_words(text)
        unknown = [w for w in words if w not in self.stoi]
        if unknown and mode == "raise":
            raise KeyError(
                f"unknown words {unknown} in {text!r}; the tokenizer knows {self.vocab_size - 4} "
                f"ShapeWorld words (see tokenizer.itos) - pass on_unknown='unk' to map them to {UNK}"
            )
        return [self.stoi.get(w, self.stoi[UNK]) for w in words]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Words of a token sequence, stopping at ``<eot>`` and skipping ``<sot>``/``<pad>``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise ValueError(f"token id {i} out of range [0, {self.vocab_size})")
            tok = self.itos[int(i)]
            if tok == EOT:
                break
            if tok in (SOT, PAD):
                continue
            out.append(tok)
        return " ".join(out)

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Tokenize one text or a list: LongTensor ``[B, L]``, ``<sot> words <eot> <pad>...``.

        Raises:
            KeyError: an unknown word with ``on_unknown="raise"``.
            ValueError: an empty batch, or a text longer than ``L - 2`` words.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("expected at least one text, got an empty list")
        length = context_length or self.context_length
        out = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > length:
                raise ValueError(
                    f"text has {len(ids) - 2} words but context_length={length} allows {length - 2}: {text!r}"
                )
            out[row, : len(ids)] = torch.tensor(ids)
        return out
