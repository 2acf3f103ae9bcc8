"""Task heads on frozen CLIP tokens: image-text matching and captioning, plus BLEU.

* :class:`MatchingHead`: image-text matching (ITM, as in ALBEF/BLIP): the caption's tokens
  cross-attend the image patches, and a linear layer on the ``<eot>`` token scores
  "does this caption describe this image?". Trained on true captions against ShapeWorld's
  hard negatives (one fact changed: swapped colours/shapes, flipped relation, replaced
  attribute), it learns what a dual encoder's single dot product cannot bind.
* :class:`CaptionDecoder`: a small transformer decoder (causal self-attention over the
  words so far, cross-attention to the image patches), trained with teacher forcing and
  decoded greedily.
* :func:`corpus_bleu`: BLEU-4 (Papineni et al., 2002) with the brevity penalty, the same
  definition as ``nltk.translate.bleu_score.corpus_bleu`` without smoothing.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossAttentionBlock
from .fusion import last_token, patch_coordinates


class MatchingHead(nn.Module):
    """ITM head: ``forward(image_tokens [B, 1+P, Wi], text_tokens [B, L, Wt], mask [B, L]) -> [B]``
    match logits (> 0 = match)."""

    def __init__(self, image_dim: int, text_dim: int, dim: int = 64, heads: int = 4, layers: int = 1,
                 grid: tuple[int, int] = (4, 4)) -> None:
        super().__init__()
        self.image_in = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, dim))
        self.text_in = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim))
        self.coord = nn.Linear(2, dim)
        self.register_buffer("coords", patch_coordinates(grid), persistent=False)
        self.blocks = nn.ModuleList([CrossAttentionBlock(dim, heads) for _ in range(layers)])
        self.self_attn = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, 0.0, "gelu", batch_first=True, norm_first=True)
            for _ in range(layers)])
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                return_attention: bool = False):
        img = self.image_in(image) + self.coord(self.coords)
        txt = self.text_in(text)
        maps = []
        for block, sa in zip(self.blocks, self.self_attn):
            txt, w = block(txt, img, return_weights=True)
            maps.append(w)
            txt = sa(txt, src_key_padding_mask=~text_mask)
        logit = self.out(last_token(txt, text_mask))[:, 0]
        return (logit, torch.stack(maps)) if return_attention else logit


class CaptionDecoder(nn.Module):
    """Transformer decoder: words attend to earlier words and to the image patches.

    Args:
        image_dim: width of the image tokens; vocab_size: the tokenizer's vocabulary;
        max_len: longest token sequence (with ``<sot>``/``<eot>``); dim/heads/layers: sizes.

    ``forward(image_tokens [B, 1+P, Wi], input_ids [B, T]) -> logits [B, T, V]`` predicts
    token ``t+1`` from tokens ``<= t``.
    """

    def __init__(self, image_dim: int, vocab_size: int, max_len: int = 24, dim: int = 64, heads: int = 4,
                 layers: int = 2, grid: tuple[int, int] = (4, 4)) -> None:
        super().__init__()
        self.max_len = max_len
        self.image_in = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, dim))
        self.coord = nn.Linear(2, dim)
        self.register_buffer("coords", patch_coordinates(grid), persistent=False)
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(dim, heads, 2 * dim, 0.0, "gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size)

    def forward(self, image: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence of {t} tokens is longer than max_len={self.max_len}")
        memory = self.image_in(image) + self.coord(self.coords)
        x = self.embed(input_ids) + self.pos[:t]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1)
        x = self.decoder(x, memory, tgt_mask=causal, tgt_is_causal=True)
        return self.lm_head(self.norm(x))

    def loss(self, image: torch.Tensor, token_ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
        """Teacher-forced cross-entropy of ``token_ids`` ``[B, T]`` (``<sot> ... <eot> <pad>...``)."""
        logits = self(image, token_ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), token_ids[:, 1:].reshape(-1), ignore_index=pad_id)

    @torch.no_grad()
    def generate(self, image: torch.Tensor, sot_id: int, eot_id: int, max_len: int | None = None) -> torch.Tensor:
        """Greedy decoding: ``[B, T]`` token ids starting with ``<sot>``, padded with ``eot_id``
        after each sequence ends."""
        max_len = min(max_len or self.max_len, self.max_len)
        ids = torch.full((image.shape[0], 1), sot_id, dtype=torch.long, device=image.device)
        done = torch.zeros(image.shape[0], dtype=torch.bool, device=image.device)
        for _ in range(max_len - 1):
            nxt = self(image, ids)[:, -1].argmax(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, eot_id), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == eot_id
            if bool(done.all()):
                break
        return ids


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]],
                max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` with uniform weights and the brevity penalty.

    Args:
        references: per hypothesis, a list of reference token lists.
        hypotheses: token lists.

    Clipped n-gram counts are summed over the corpus before the geometric mean; the
    effective reference length is the closest reference length (ties: the shorter).
    Returns 0 when some order has no match (no smoothing), like nltk.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference sets but {len(hypotheses)} hypotheses")
    if not hypotheses:
        raise ValueError("empty corpus")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    matches = [0] * max_n
    totals = [0] * max_n
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses):
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            max_ref: Counter = Counter()
            for r in refs:
                max_ref |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            totals[n - 1] += max(1, len(hyp) - n + 1)  # as nltk: at least 1
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return bp * math.exp(log_precision)
