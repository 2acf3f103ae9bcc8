"""Fusion architectures for visual question answering on frozen CLIP tokens.

All three models read the same inputs: image tokens ``[B, 1 + P, W_i]`` (class + patch
tokens of a frozen ViT, :func:`~course_lib.multimodal.features.image_tokens`) and
question tokens ``[B, L, W_t]`` with their mask (:func:`~.features.text_tokens`), and
answer with logits over the answer vocabulary ``[B, A]``. They share the input stem
(layer norm + linear projection to width ``d``, a patch-coordinate embedding, a modality
type embedding) and differ only in *where* the modalities meet:

* **early** (single stream, joint tokens; VisualBERT, Li et al., 2019): the text and
  image tokens are concatenated and every layer is self-attention over the joint sequence;
* **middle** (cross-attention; LXMERT/ViLBERT/Flamingo style): each layer lets the
  question tokens attend the image patches (cross-attention), then the question tokens
  attend each other (self-attention);
* **late** (score fusion): an image-only and a question-only transformer each produce
  answer scores, and the scores are added. No layer sees both modalities, so questions
  whose answer depends on *which* object the question names cannot be answered.

The answer is read from the question's last token (``<eot>``) for early and middle
fusion, as CLIP's text tower pools its output.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import seed_everything
from .attention import CrossAttentionBlock
from .features import image_tokens, text_tokens, unique_texts

FUSION_KINDS: tuple[str, ...] = ("early", "middle", "late")


@dataclass
class FusionConfig:
    """Sizes shared by the fusion models (configs as data).

    Attributes:
        image_dim, text_dim: widths of the input tokens.
        num_answers: size of the answer vocabulary.
        grid: ``(rows, cols)`` of the patch grid (the image tokens are class + rows*cols).
        dim, heads, layers, mlp_ratio: the transformer's width, heads, depth, MLP ratio.
    """

    image_dim: int
    text_dim: int
    num_answers: int
    grid: tuple[int, int] = (4, 4)
    dim: int = 64
    heads: int = 4
    layers: int = 2
    mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        for name in ("image_dim", "text_dim", "num_answers", "dim", "heads", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        self.grid = tuple(int(g) for g in self.grid)  # type: ignore[assignment]


def patch_coordinates(grid: tuple[int, int]) -> torch.Tensor:
    """``[1 + P, 2]`` coordinates in [-1, 1] of the class token (0, 0) and each patch (x, y)."""
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, gh), torch.linspace(-1, 1, gw), indexing="ij")
    return torch.cat([torch.zeros(1, 2), torch.stack([xs.flatten(), ys.flatten()], dim=1)])


def _self_attention_layer(cfg: FusionConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(cfg.dim, cfg.heads, int(cfg.dim * cfg.mlp_ratio), dropout=0.0,
                                      activation="gelu", batch_first=True, norm_first=True)


def last_token(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, D]``: each sequence's last real token (its ``<eot>``)."""
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), mask.sum(dim=1) - 1]


class FusionStem(nn.Module):
    """Projects both modalities to width ``d`` and adds coordinate and type embeddings."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_in = nn.Sequential(nn.LayerNorm(cfg.image_dim), nn.Linear(cfg.image_dim, cfg.dim))
        self.text_in = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.dim))
        self.coord = nn.Linear(2, cfg.dim)
        self.modality = nn.Parameter(torch.zeros(2, cfg.dim))
        self.register_buffer("coords", patch_coordinates(cfg.grid), persistent=False)

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor):
        cfg = self.cfg
        n_tokens = 1 + cfg.grid[0] * cfg.grid[1]
        if image.ndim != 3 or image.shape[1:] != (n_tokens, cfg.image_dim):
            raise ValueError(f"image tokens must be [B, {n_tokens}, {cfg.image_dim}], got {tuple(image.shape)}")
        if text.ndim != 3 or text.shape[-1] != cfg.text_dim or text.shape[0] != image.shape[0]:
            raise ValueError(f"text tokens must be [B={image.shape[0]}, L, {cfg.text_dim}], got {tuple(text.shape)}")
        if text_mask.dtype != torch.bool or text_mask.shape != text.shape[:2]:
            raise ValueError(f"text_mask must be bool [B, L] = {tuple(text.shape[:2])}")
        if not bool(text_mask.any(dim=1).all()):
            raise ValueError("every question needs at least one real token")
        img = self.image_in(image) + self.coord(self.coords) + self.modality[0]
        txt = self.text_in(text) + self.modality[1]
        return img, txt


class EarlyFusion(nn.Module):
    """Single-stream transformer over the concatenated ``[question ; image]`` tokens."""

    kind = "early"

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = FusionStem(cfg)
        self.layers = nn.ModuleList([_self_attention_layer(cfg) for _ in range(cfg.layers)])
        self.head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_answers))

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        img, txt = self.stem(image, text, text_mask)
        x = torch.cat([txt, img], dim=1)
        pad = torch.cat([~text_mask, torch.zeros(img.shape[:2], dtype=torch.bool, device=img.device)], dim=1)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
        return self.head(last_token(x[:, : txt.shape[1]], text_mask))


class MiddleFusion(nn.Module):
    """Two streams that meet in every layer: question tokens cross-attend the image, then
    self-attend. ``forward(..., return_attention=True)`` also returns the cross-attention
    maps ``[layers, B, L, 1 + P]``."""

    kind = "middle"

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = FusionStem(cfg)
        self.cross = nn.ModuleList([CrossAttentionBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers)])
        self.self_attn = nn.ModuleList([_self_attention_layer(cfg) for _ in range(cfg.layers)])
        self.head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_answers))

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                return_attention: bool = False):
        img, txt = self.stem(image, text, text_mask)
        maps = []
        for cross, self_attn in zip(self.cross, self.self_attn):
            txt, w = cross(txt, img, return_weights=True)
            maps.append(w)
            txt = self_attn(txt, src_key_padding_mask=~text_mask)
        logits = self.head(last_token(txt, text_mask))
        return (logits, torch.stack(maps)) if return_attention else logits


class LateFusion(nn.Module):
    """Separate image and question transformers; their answer scores are summed."""

    kind = "late"

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = FusionStem(cfg)
        self.image_layers = nn.ModuleList([_self_attention_layer(cfg) for _ in range(cfg.layers)])
        self.text_layers = nn.ModuleList([_self_attention_layer(cfg) for _ in range(cfg.layers)])
        self.image_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_answers))
        self.text_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.num_answers))

    def unimodal_logits(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor):
        """``(image_logits, text_logits)``, each ``[B, A]``."""
        img, txt = self.stem(image, text, text_mask)
        for layer in self.image_layers:
            img = layer(img)
        for layer in self.text_layers:
            txt = layer(txt, src_key_padding_mask=~text_mask)
        return self.image_head(img[:, 0]), self.text_head(last_token(txt, text_mask))

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        image_logits, text_logits = self.unimodal_logits(image, text, text_mask)
        return image_logits + text_logits


FUSION_MODELS: dict[str, type[nn.Module]] = {"early": EarlyFusion, "middle": MiddleFusion, "late": LateFusion}


def build_fusion_model(kind: str, cfg: FusionConfig) -> nn.Module:
    """``"early"``, ``"middle"`` or ``"late"`` fusion model for ``cfg``."""
    if kind not in FUSION_MODELS:
        raise ValueError(f"unknown fusion kind {kind!r}: expected one of {FUSION_KINDS}")
    return FUSION_MODELS[kind](cfg)


# ----------------------------------------------------------------------------- data


@dataclass
class VQAFeatures:
    """Frozen-CLIP features of a ShapeWorld VQA split.

    Attributes:
        image_tokens: ``[N_img, 1 + P, W_i]``; text_tokens ``[N_q, L, W_t]`` and
            text_mask ``[N_q, L]`` for the distinct questions.
        image_index, question_index, answers: ``[M]`` int64 per (image, question) item.
        kinds: ``[M]`` question kinds; questions: the distinct question strings;
        answer_vocab: answer strings (index = class).
    """

    image_tokens: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    image_index: torch.Tensor
    question_index: torch.Tensor
    answers: torch.Tensor
    kinds: np.ndarray
    questions: list[str]
    answer_vocab: list[str]
    images: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.answers.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image_tokens, text_tokens, text_mask, answers)`` of items ``idx``."""
        q = self.question_index[idx]
        mask = self.text_mask[q]
        length = int(mask.sum(dim=1).max())
        return self.image_tokens[self.image_index[idx]], self.text_tokens[q, :length], mask[:, :length], self.answers[idx]

    def subset(self, kinds: Sequence[str]) -> "VQAFeatures":
        """Only the items whose question kind is in ``kinds``."""
        keep = torch.from_numpy(np.isin(self.kinds, list(kinds)))
        if not bool(keep.any()):
            raise ValueError(f"no items of kinds {list(kinds)}")
        return VQAFeatures(self.image_tokens, self.text_tokens, self.text_mask, self.image_index[keep],
                           self.question_index[keep], self.answers[keep], self.kinds[keep.numpy()],
                           self.questions, self.answer_vocab, self.images)

    @property
    def config_dims(self) -> dict[str, int]:
        return {"image_dim": int(self.image_tokens.shape[-1]), "text_dim": int(self.text_tokens.shape[-1]),
                "num_answers": len(self.answer_vocab)}


IMAGE_LAYER = 2  # ViT block whose patch tokens the fusion models read (see :func:`.probes.layer_probes`)


def vqa_features(model: torch.nn.Module, tokenizer: Callable, dataset: Any, layer: int = IMAGE_LAYER,
                 project: bool = False) -> VQAFeatures:
    """Encode a :class:`~course_lib.data.ShapeWorldQADataset` with a frozen CLIP.

    Each image is encoded once (``image_tokens``) and each distinct question once
    (``text_tokens``); items index into them.

    Args:
        layer: ViT block of the patch tokens. The default, block 2 of the tiny CLIP's 4, is
            where linear probes (:func:`~.probes.layer_probes`) read the colour and shape
            under a patch best while its position is still ~95% readable; position fades
            with depth.
        project: pass the tokens through ``ln_post`` and the projections into the joint
            space (the last block's convention; projected patch tokens lose position:
            a linear probe reads a patch's own position less well from them).
    """
    if len(dataset) == 0:
        raise ValueError("empty VQA dataset")
    img = image_tokens(model, dataset.images, layer=layer, project=project)
    questions, q_index = unique_texts([qa.question for _, qa in dataset.items])
    txt, mask = text_tokens(model, tokenizer, questions, project=project)
    return VQAFeatures(
        image_tokens=img,
        text_tokens=txt,
        text_mask=mask,
        image_index=torch.tensor([i for i, _ in dataset.items], dtype=torch.long),
        question_index=q_index,
        answers=dataset.answer_index.clone(),
        kinds=np.array([qa.kind for _, qa in dataset.items]),
        questions=questions,
        answer_vocab=list(dataset.answers),
        images=dataset.batch.images,
    )


# ----------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    """One training budget, identical for every model compared."""

    steps: int = 400
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need steps >= 1, batch_size >= 1 and lr > 0, got {asdict(self)}")


@dataclass(frozen=True)
class FusionBudget:
    """The data, training budget and model size of one fusion comparison (configs as data).

    Attributes:
        train_images, test_images: ShapeWorld scenes (1-3 objects, about 3.7 questions each).
        settings: the training budget every family gets.
        model: :class:`FusionConfig` sizes shared by every family.
    """

    train_images: int
    test_images: int
    settings: TrainSettings
    model: dict[str, int]


def fusion_budget() -> FusionBudget:
    """The budget of the current profile (``COURSE_PROFILE``): quick = about 15 s of training
    per model on one CPU thread; full = 16,000 scenes, 6,000 steps of 64, two layers."""
    from ..config import pick

    return FusionBudget(
        train_images=pick(quick=4_000, full=16_000),
        test_images=pick(quick=600, full=2_000),
        settings=TrainSettings(steps=pick(quick=800, full=6_000), batch_size=pick(quick=32, full=64), lr=3e-3),
        model={"dim": 64, "heads": 4, "layers": pick(quick=1, full=2)},
    )


def _schedule(step: int, s: TrainSettings) -> float:
    warm = max(1, int(s.warmup_frac * s.steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, s.steps - warm)))


def train_vqa(model: nn.Module, data: VQAFeatures, settings: TrainSettings | None = None,
              eval_data: VQAFeatures | None = None, eval_every: int = 0,
              loss_fn: Callable[..., torch.Tensor] | None = None) -> dict[str, list]:
    """Train ``model`` with AdamW (warm-up + cosine) on cross-entropy over answers.

    Args:
        eval_every: evaluate on ``eval_data`` every so many steps (0 = only at the end).
        loss_fn: ``loss_fn(model, image, text, mask, answers) -> loss``, default cross-entropy.

    Returns:
        ``{"loss": per-step losses, "eval_step": [...], "eval_accuracy": [...], "seconds": [wall]}``.
    """
    settings = settings or TrainSettings()
    if len(data) == 0:
        raise ValueError("no training items")
    seed_everything(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history: dict[str, list] = {"loss": [], "eval_step": [], "eval_accuracy": [], "seconds": []}
    t0 = time.perf_counter()
    for step in range(settings.steps):
        for group in opt.param_groups:
            group["lr"] = settings.lr * _schedule(step, settings)
        idx = torch.randint(0, len(data), (settings.batch_size,), generator=gen)
        img, txt, mask, y = data.batch(idx)
        model.train()
        loss = loss_fn(model, img, txt, mask, y) if loss_fn else F.cross_entropy(model(img, txt, mask), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["loss"].append(float(loss.detach()))
        last = step == settings.steps - 1
        if eval_data is not None and ((eval_every and (step + 1) % eval_every == 0) or last):
            history["eval_step"].append(step + 1)
            history["eval_accuracy"].append(evaluate_vqa(model, eval_data).accuracy)
    history["seconds"].append(time.perf_counter() - t0)
    model.eval()
    return history


@dataclass
class VQAReport:
    """Accuracy overall and per question kind; ``predictions`` are answer indices ``[M]``."""

    accuracy: float
    by_kind: dict[str, float]
    predictions: torch.Tensor
    correct: np.ndarray

    def as_row(self) -> dict[str, float]:
        return {"overall": self.accuracy, **self.by_kind}


@torch.no_grad()
def predict_vqa(model: nn.Module, data: VQAFeatures, batch_size: int = 1024) -> torch.Tensor:
    """Answer indices ``[M]`` for every item of ``data``."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(len(data), start + batch_size))
        img, txt, mask, _ = data.batch(idx)
        preds.append(model(img, txt, mask).argmax(dim=1))
    model.train(was_training)
    return torch.cat(preds)


def evaluate_vqa(model: nn.Module, data: VQAFeatures) -> VQAReport:
    """Accuracy of ``model`` on ``data``, overall and by question kind."""
    pred = predict_vqa(model, data)
    correct = (pred == data.answers).numpy()
    by_kind = {k: float(correct[data.kinds == k].mean()) for k in ("color", "shape", "count", "relation")
               if (data.kinds == k).any()}
    return VQAReport(float(correct.mean()), by_kind, pred, correct)


def majority_baseline(train: VQAFeatures, test: VQAFeatures) -> dict[str, float]:
    """Accuracy of answering each question kind with its most frequent training answer."""
    out = {}
    for k in ("color", "shape", "count", "relation"):
        tr, te = train.answers[torch.from_numpy(train.kinds == k)], test.answers[torch.from_numpy(test.kinds == k)]
        if len(tr) and len(te):
            out[k] = float((te == torch.mode(tr).values).float().mean())
    return out


def latency_ms(model: nn.Module, data: VQAFeatures, batch_size: int = 1, repeats: int = 20) -> float:
    """Median forward latency (ms) of one batch of ``batch_size`` items."""
    from ..config import benchmark

    idx = torch.arange(min(batch_size, len(data)))
    img, txt, mask, _ = data.batch(idx)
    model.eval()
    res = benchmark(lambda: model(img, txt, mask), name=getattr(model, "kind", "model"), warmup=3, repeats=repeats)
    return 1e3 * res.median


@dataclass
class FusionRun:
    """One trained fusion model of a comparison: the model, its training history, its test
    report, its parameter count and its median forward latency (ms) at batch 1 and 256."""

    model: nn.Module
    history: dict[str, list]
    report: VQAReport
    params: int
    latency_ms: dict[int, float]

    def as_row(self) -> dict[str, float]:
        return {**self.report.as_row(), "params": self.params,
                **{f"ms b={b}": ms for b, ms in self.latency_ms.items()}, "train_s": self.history["seconds"][0]}


def compare_fusion(train: VQAFeatures, test: VQAFeatures, settings: TrainSettings,
                   kinds: Sequence[str] = FUSION_KINDS, eval_every: int = 0,
                   latency_batches: Sequence[int] = (1, 256), progress: Callable[[str], None] | None = None,
                   **config: Any) -> dict[str, FusionRun]:
    """Train each fusion family on the same data with the same budget and the same width.

    Args:
        settings: the training budget, identical for every family (same seed, so the same
            batches in the same order); each model's initial weights are drawn from
            ``settings.seed`` too, so a run is reproduced by its seed alone.
        config: :class:`FusionConfig` sizes (``dim``, ``heads``, ``layers``, ...) shared by all.

    Returns:
        ``{kind: FusionRun}`` in the order of ``kinds``.
    """
    from ..models import count_parameters

    runs = {}
    for kind in kinds:
        seed_everything(settings.seed)  # initial weights from the seed, not from whatever ran before
        net = build_fusion_model(kind, FusionConfig(**train.config_dims, **config))
        history = train_vqa(net, train, settings, eval_data=test, eval_every=eval_every)
        report = evaluate_vqa(net, test)
        latency = {b: latency_ms(net, test, b) for b in latency_batches}
        runs[kind] = FusionRun(net, history, report, count_parameters(net), latency)
        if progress is not None:
            progress(f"{kind:>6}: trained in {history['seconds'][0]:.1f} s, test accuracy {report.accuracy:.3f}")
    return runs
