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
from dataclasses import dataclass
from typing import Sequence

import numpy as np
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


# ----------------------------------------------------------------------------- training helpers


@dataclass
class MatchingFeatures:
    """Frozen-CLIP tokens for image-text matching: images ``[N, 1+P, D]``, true captions and
    hard negatives ``[N, L, D]`` with masks ``[N, L]``, and each negative's kind ``[N]``."""

    image: torch.Tensor
    positive: torch.Tensor
    positive_mask: torch.Tensor
    negative: torch.Tensor
    negative_mask: torch.Tensor
    kinds: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])


def matching_features(model: nn.Module, tokenizer, batch) -> MatchingFeatures:
    """Tokens of a ShapeWorld batch (images, captions, hard negatives) in the joint space."""
    from .features import image_tokens, text_tokens

    pos, pos_mask = text_tokens(model, tokenizer, batch.captions, project=True, trim=False)
    neg, neg_mask = text_tokens(model, tokenizer, batch.negatives, project=True, trim=False)
    return MatchingFeatures(image_tokens(model, batch.images, project=True), pos, pos_mask, neg, neg_mask,
                            np.asarray(batch.negative_kinds))


def train_matching_head(head: MatchingHead, feats: MatchingFeatures, steps: int = 200, batch_size: int = 64,
                        lr: float = 2e-3, seed: int = 0) -> list[float]:
    """Binary cross-entropy: each sampled image with its caption (label 1) and its hard negative (0)."""
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr, weight_decay=0.01)
    target = torch.cat([torch.ones(batch_size), torch.zeros(batch_size)])
    losses = []
    head.train()
    for _ in range(steps):
        idx = torch.randint(0, len(feats), (batch_size,), generator=gen)
        img = torch.cat([feats.image[idx], feats.image[idx]])
        txt = torch.cat([feats.positive[idx], feats.negative[idx]])
        msk = torch.cat([feats.positive_mask[idx], feats.negative_mask[idx]])
        loss = F.binary_cross_entropy_with_logits(head(img, txt, msk), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    head.eval()
    return losses


@torch.no_grad()
def matching_scores(head: MatchingHead, feats: MatchingFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """Match logits ``([N], [N])`` of the true captions and of the hard negatives."""
    head.eval()
    return (head(feats.image, feats.positive, feats.positive_mask),
            head(feats.image, feats.negative, feats.negative_mask))


def train_captioner(decoder: CaptionDecoder, image: torch.Tensor, token_ids: torch.Tensor, steps: int = 300,
                    batch_size: int = 64, lr: float = 3e-3, seed: int = 0, pad_id: int = 0) -> list[float]:
    """Teacher-forced training of ``decoder`` on image tokens ``[N, 1+P, W]`` and captions ``[N, T]``."""
    if len(image) != len(token_ids) or len(image) == 0:
        raise ValueError(f"need as many (non-zero) captions as images: {len(image)} vs {len(token_ids)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    length = int((token_ids != pad_id).sum(dim=1).max())
    token_ids = token_ids[:, :length]
    opt = torch.optim.AdamW(decoder.parameters(), lr, weight_decay=0.01)
    losses = []
    decoder.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(image), (batch_size,), generator=gen)
        loss = decoder.loss(image[idx], token_ids[idx], pad_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    decoder.eval()
    return losses


def decode_captions(decoder: CaptionDecoder, image: torch.Tensor, tokenizer) -> list[str]:
    """Greedy captions (strings) for image tokens ``[N, 1+P, W]``."""
    ids = decoder.generate(image, tokenizer.sot_id, tokenizer.eot_id)
    return [tokenizer.decode(row) for row in ids]


def caption_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Exact-match rate and corpus BLEU-4 of predicted captions against one reference each."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("need one reference per prediction (and at least one)")
    exact = float(np.mean([p == r for p, r in zip(predictions, references)]))
    bleu = corpus_bleu([[r.split()] for r in references], [p.split() for p in predictions])
    return {"exact_match": exact, "bleu4": bleu}


# ----------------------------------------------------------------------------- notebook 2.6's matching study


def accuracy_by_kind(positive: torch.Tensor, negative: torch.Tensor, kinds: np.ndarray) -> dict[str, float]:
    """Share of pairs whose true caption scores above its hard negative, per negative kind and
    ``"all"`` (``positive``, ``negative``: scores ``[N]``; ``kinds``: ``[N]`` strings)."""
    if positive.shape != negative.shape or positive.ndim != 1 or len(kinds) != len(positive):
        raise ValueError(f"need scores [N] and kinds [N], got {tuple(positive.shape)}, {tuple(negative.shape)}, "
                         f"{len(kinds)}")
    if len(kinds) == 0:
        raise ValueError("no pairs to score")
    win = (positive > negative).numpy()
    kinds = np.asarray(kinds)
    out = {str(k): float(win[kinds == k].mean()) for k in sorted(set(kinds.tolist()))}
    out["all"] = float(win.mean())
    return out


@torch.no_grad()
def dual_encoder_scores(model: nn.Module, tokenizer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores ``([N], [N])`` of each image with its caption and with its hard negative in
    the CLIP model's joint space (no training: the dual encoder as it is)."""
    from ..models import encode_images, encode_texts

    img = encode_images(model, batch.images)
    return ((img * encode_texts(model, tokenizer, batch.captions)).sum(1),
            (img * encode_texts(model, tokenizer, batch.negatives)).sum(1))


def train_itm_head(train: MatchingFeatures, steps: int, seed: int = 0, dim: int = 64, heads: int = 4,
                   layers: int = 1, batch_size: int = 64, lr: float = 2e-3) -> tuple[MatchingHead, list[float]]:
    """A :class:`MatchingHead` built and trained (:func:`train_matching_head`) from ``seed``:
    the same seed gives the same head and the same batches."""
    torch.manual_seed(seed)
    head = MatchingHead(train.image.shape[-1], train.positive.shape[-1], dim=dim, heads=heads, layers=layers)
    losses = train_matching_head(head, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    return head, losses
