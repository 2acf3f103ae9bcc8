"""Incremental training of the tiny CLIP on new concepts.

The bundled tiny CLIP was trained on 6 colours x 4 shapes. Its tokenizer knows the words
``orange``, ``pink``, ``diamond`` and ``ring``, but their embeddings were never trained.
Here it learns them from captioned images of the new concepts, and we measure

* **new-concept accuracy**: zero-shot classification of images of the 24 new classes
  (a new colour and/or a new shape) among all 48 colour x shape names;
* **retention**: zero-shot accuracy on the 24 old classes among the old names (the
  original 24-way task).

Methods (all use open_clip's ``ClipLoss`` on the new data):

* ``finetune``: nothing else;
* ``replay``: part of every batch comes from a small memory of old image-caption pairs;
* ``lwf``: Learning without Forgetting - the student's image-to-old-class-prompt logits on
  the *new* images are distilled towards the frozen original model's (temperature ``T``);
* ``feature``: ZSCL-style feature distillation (Zheng et al., 2023): the student's image
  features of the new images and text features of the old class prompts stay close
  (cosine) to the frozen original's - no old images needed;

plus WiSE-FT (Wortsman et al., 2022), a weight-space interpolation of the fine-tuned and
the original model after training (:func:`interpolate_weights`).

``trainable="text"`` (the quick default) trains the text tower, the logit scale and the
image projection ``visual.proj`` and keeps the image trunk frozen, so the trunk's pooled
features are computed once: a step costs a text forward pass. ``trainable="all"`` trains
everything (slower; the full profile).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from ..data import ALL_COLORS, ALL_SHAPES, ShapeWorldConfig, generate, split_seed
from ..models import encode_images, prepare_images, zero_shot_evaluate
from .regularization import distillation_loss

OLD_CONFIG = ShapeWorldConfig()
ALL_CONFIG = ShapeWorldConfig(colors=tuple(ALL_COLORS), shapes=ALL_SHAPES)
NEW_COLORS: tuple[str, ...] = tuple(c for c in ALL_COLORS if c not in OLD_CONFIG.colors)
NEW_SHAPES: tuple[str, ...] = tuple(s for s in ALL_SHAPES if s not in OLD_CONFIG.shapes)
METHODS: tuple[str, ...] = ("finetune", "replay", "lwf", "feature")
PROMPT = "a {}"


@dataclass
class ConceptData:
    """Images (uint8 ``[N, 32, 32, 3]``), captions and labels of the new-concept experiment.

    Attributes:
        train_images, train_captions: single-object images of new classes, with captions.
        replay_images, replay_captions: a memory of old-palette images (used by ``replay`` only).
        new_test_images, new_test_labels: new-class test images; labels index ``all_classes``.
        old_test_images, old_test_labels: old-class test images; labels index ``old_classes``.
    """

    train_images: np.ndarray
    train_captions: list[str]
    replay_images: np.ndarray
    replay_captions: list[str]
    new_test_images: np.ndarray
    new_test_labels: np.ndarray
    old_test_images: np.ndarray
    old_test_labels: np.ndarray
    all_classes: list[str]
    old_classes: list[str]

    @property
    def new_classes(self) -> list[str]:
        old = set(self.old_classes)
        return [c for c in self.all_classes if c not in old]


def _new_concept_images(n: int, seed: int, split: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``n`` single-object images whose colour or shape is new, with captions and 48-way labels."""
    old = set(OLD_CONFIG.class_names)
    names = ALL_CONFIG.class_names
    batch = generate(3 * n, split_seed(split, seed), ALL_CONFIG)  # about half the classes are new
    keep = np.array([names[k] not in old for k in batch.labels])
    idx = np.nonzero(keep)[0][:n]
    if len(idx) < n:
        raise RuntimeError(f"generated only {len(idx)} new-concept images, wanted {n}")
    return batch.images[idx], [batch.captions[i] for i in idx], batch.labels[idx]


def concept_data(n_train: int = 2000, n_test: int = 500, n_replay: int = 500, seed: int = 0) -> ConceptData:
    """Generate the experiment's data (deterministic from ``seed``)."""
    if min(n_train, n_test, n_replay) < 1:
        raise ValueError(f"all sizes must be >= 1, got {n_train}, {n_test}, {n_replay}")
    tr_img, tr_cap, _ = _new_concept_images(n_train, seed + 101, "train")
    te_img, _, te_lab = _new_concept_images(n_test, seed + 101, "test")
    replay = generate(n_replay, split_seed("val", seed + 202), OLD_CONFIG)
    old_test = generate(n_test, split_seed("test", seed + 303), OLD_CONFIG)
    return ConceptData(tr_img, tr_cap, replay.images, replay.captions, te_img, te_lab,
                       old_test.images, old_test.labels, ALL_CONFIG.class_names, OLD_CONFIG.class_names)


@torch.no_grad()
def evaluate_concepts(model: torch.nn.Module, tokenizer: Callable, data: ConceptData) -> dict[str, float]:
    """``{"new": new-class accuracy among all 48 names, "old": old-class accuracy among the
    24 old names, "old48": old-class accuracy among all 48 names}`` (fractions)."""
    model.eval()
    new = zero_shot_evaluate(model, tokenizer, data.new_test_images, data.new_test_labels, data.all_classes)
    old = zero_shot_evaluate(model, tokenizer, data.old_test_images, data.old_test_labels, data.old_classes)
    all_index = {c: i for i, c in enumerate(data.all_classes)}
    old_in_all = np.array([all_index[data.old_classes[k]] for k in data.old_test_labels])
    old48 = zero_shot_evaluate(model, tokenizer, data.old_test_images, old_in_all, data.all_classes)
    return {"new": new.accuracy, "old": old.accuracy, "old48": old48.accuracy}


@dataclass
class IncrementalConfig:
    """Settings of one incremental-training run.

    Attributes:
        method: one of :data:`METHODS`.
        steps, batch_size, lr: AdamW optimisation (no weight decay).
        trainable: ``"text"`` (text tower, logit scale and ``visual.proj``) or ``"all"``.
        replay_fraction: share of each batch drawn from the memory (``replay``).
        distill_weight: weight of the distillation term (``lwf``, ``feature``).
        temperature: LwF temperature.
        seed: batch sampling.
    """

    method: str = "finetune"
    steps: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    trainable: str = "text"
    replay_fraction: float = 0.5
    distill_weight: float = 1.0
    temperature: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: expected one of {METHODS}")
        if self.trainable not in ("text", "all"):
            raise ValueError(f"trainable must be 'text' or 'all', got {self.trainable!r}")
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError(f"need steps >= 1, batch_size >= 2, lr > 0: {self}")
        if not 0.0 <= self.replay_fraction < 1.0 or self.distill_weight < 0 or self.temperature <= 0:
            raise ValueError(f"need 0 <= replay_fraction < 1, distill_weight >= 0, temperature > 0: {self}")


@torch.no_grad()
def pooled_features(model: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
    """The image trunk's pooled output ``[N, width]``, before the projection ``visual.proj``."""
    visual = model.visual
    proj = visual.proj
    visual.proj = None
    try:
        return encode_images(model, images, normalize=False)
    finally:
        visual.proj = proj


class _ImageSource:
    """Student image features of a fixed image set, with the frozen-trunk shortcut
    (the trunk's pooled features are computed once, or taken from ``cache``)."""

    def __init__(self, model: torch.nn.Module, images: np.ndarray, trainable: str, cache: dict | None = None) -> None:
        self.images, self.trainable = images, trainable
        self.pooled = None
        if trainable == "text":
            key = (id(model), id(images))
            if cache is not None and key in cache:
                self.pooled = cache[key]
            else:
                self.pooled = pooled_features(model, images)
                if cache is not None:
                    cache[key] = self.pooled

    def features(self, model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
        if self.pooled is not None:
            return F.normalize(self.pooled[idx] @ model.visual.proj, dim=-1)
        x = prepare_images(model, self.images[idx.numpy()])
        return model.encode_image(x, normalize=True)


def _set_trainable(model: torch.nn.Module, trainable: str) -> list[torch.nn.Parameter]:
    params = []
    for name, p in model.named_parameters():
        train = trainable == "all" or not name.startswith("visual.") or name == "visual.proj"
        p.requires_grad_(train)
        if train:
            params.append(p)
    return params


def train_incremental(
    model: torch.nn.Module,
    tokenizer: Callable,
    data: ConceptData,
    cfg: IncrementalConfig,
    cache: dict | None = None,
) -> tuple[torch.nn.Module, list[float]]:
    """Teach a copy of ``model`` the new concepts with ``cfg.method``; ``model`` itself is
    the frozen teacher and is not modified. Returns ``(student, per-step losses)``.

    ``cache``: a dict shared between calls with the same ``model`` and ``data`` to reuse the
    frozen trunk's features (``trainable="text"``)."""
    teacher = model.eval()
    student = copy.deepcopy(model)
    params = _set_trainable(student, cfg.trainable)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    clip_loss = ClipLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    new_src = _ImageSource(teacher, data.train_images, cfg.trainable, cache)
    old_src = _ImageSource(teacher, data.replay_images, cfg.trainable, cache) if cfg.method == "replay" else None
    prompts = tokenizer([PROMPT.format(c) for c in data.old_classes])
    with torch.no_grad():
        t_prompts = teacher.encode_text(prompts, normalize=True)
        t_scale = teacher.logit_scale.exp()
    n_old = int(round(cfg.batch_size * cfg.replay_fraction)) if old_src is not None else 0
    n_new = cfg.batch_size - n_old
    losses = []
    student.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(data.train_images), (n_new,), generator=gen)
        img = new_src.features(student, idx)
        caps = [data.train_captions[i] for i in idx.tolist()]
        if old_src is not None:
            jdx = torch.randint(0, len(data.replay_images), (n_old,), generator=gen)
            img = torch.cat([img, old_src.features(student, jdx)])
            caps += [data.replay_captions[j] for j in jdx.tolist()]
        txt = student.encode_text(tokenizer(caps), normalize=True)
        scale = student.logit_scale.exp()
        loss = clip_loss(img, txt, scale)
        if cfg.method in ("lwf", "feature") and cfg.distill_weight > 0:
            with torch.no_grad():
                t_img = new_src.features(teacher, idx)
            s_prompts = student.encode_text(prompts, normalize=True)
            if cfg.method == "lwf":
                kd = distillation_loss(scale * img[:n_new] @ s_prompts.T, t_scale * t_img @ t_prompts.T, cfg.temperature)
            else:
                kd = (1 - F.cosine_similarity(img[:n_new], t_img, dim=-1)).mean() + \
                     (1 - F.cosine_similarity(s_prompts, t_prompts, dim=-1)).mean()
            loss = loss + cfg.distill_weight * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            student.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
    student.eval()
    for p in student.parameters():
        p.requires_grad_(True)
    return student, losses


@torch.no_grad()
def interpolate_weights(original: torch.nn.Module, finetuned: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """WiSE-FT: a model with weights ``(1 - alpha) * original + alpha * finetuned``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = copy.deepcopy(finetuned)
    sd0, sd1 = original.state_dict(), finetuned.state_dict()
    if sd0.keys() != sd1.keys():
        raise ValueError("the two models have different parameters")
    out.load_state_dict({k: (1 - alpha) * sd0[k] + alpha * sd1[k] if torch.is_floating_point(sd0[k]) else sd1[k]
                         for k in sd0})
    return out.eval()


def compare_methods(
    model: torch.nn.Module,
    tokenizer: Callable,
    data: ConceptData,
    methods: Sequence[str] = METHODS,
    wise_alpha: float | None = 0.5,
    **config,
) -> tuple[list[dict], dict[str, torch.nn.Module]]:
    """Train each method from the same original ``model``; evaluate original, each result
    and (``wise_alpha``) WiSE-FT of the fine-tuned model. Returns ``(rows, models)``;
    rows hold ``method``, ``new``, ``old``, ``old48`` (%) and ``seconds``."""
    rows = [{"method": "original", **{k: 100 * v for k, v in evaluate_concepts(model, tokenizer, data).items()},
             "seconds": 0.0}]
    models = {"original": model}
    cache: dict = {}
    for method in methods:
        t0 = time.perf_counter()
        student, _ = train_incremental(model, tokenizer, data, IncrementalConfig(method=method, **config), cache)
        seconds = time.perf_counter() - t0
        models[method] = student
        rows.append({"method": method, **{k: 100 * v for k, v in evaluate_concepts(student, tokenizer, data).items()},
                     "seconds": seconds})
        if method == "finetune" and wise_alpha is not None:
            wise = interpolate_weights(model, student, wise_alpha)
            models["finetune+wise"] = wise
            rows.append({"method": f"finetune + WiSE-FT (alpha={wise_alpha:g})",
                         **{k: 100 * v for k, v in evaluate_concepts(wise, tokenizer, data).items()}, "seconds": seconds})
    return rows, models


@dataclass
class SeedComparison:
    """:func:`compare_over_seeds`: every method's figures, one value per seed (in %).

    Attributes:
        seeds: the seeds (each seeds both the generated data and the batch order).
        values: ``{method: {"new": [...], "old": [...], "old48": [...]}}``; methods are
            ``original``, each trained method and ``finetune + WiSE-FT (alpha=A)`` for every
            alpha of the WiSE-FT sweep strictly between 0 and 1.
        wise_alphas: the interpolation weights evaluated (0 = original, 1 = fine-tuned).
        seconds: training seconds per method, summed over seeds.
        models: the models of the first seed (``original``, each method).
    """

    seeds: list[int]
    values: dict[str, dict[str, list[float]]]
    wise_alphas: list[float]
    seconds: dict[str, float]
    models: dict[str, torch.nn.Module]

    def rows(self) -> list[dict]:
        """One row per method: ``method``, mean and ``_std`` of ``new``, ``old``, ``old48`` (for
        :func:`course_lib.continual.experiments.markdown_table`)."""
        out = []
        for method, figs in self.values.items():
            row = {"method": method}
            for key, vals in figs.items():
                v = np.asarray(vals, dtype=float)
                row[key], row[key + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
            out.append(row)
        return out


def wise_label(alpha: float) -> str:
    """The method name of WiSE-FT at ``alpha`` in :class:`SeedComparison`."""
    return f"finetune + WiSE-FT (alpha={alpha:g})"


def compare_over_seeds(
    model: torch.nn.Module,
    tokenizer: Callable,
    seeds: Sequence[int],
    n_train: int,
    n_test: int,
    n_replay: int,
    methods: Sequence[str] = METHODS,
    wise_alphas: Sequence[float] = (0.25, 0.5, 0.75),
    **config,
) -> SeedComparison:
    """:func:`compare_methods` for each seed: new data (:func:`concept_data` with that seed)
    and a new batch order (``IncrementalConfig.seed``), so the spread covers both.

    ``wise_alphas``: WiSE-FT weights (each in (0, 1)) evaluated on every seed's fine-tuned
    model. ``config``: :class:`IncrementalConfig` fields (``steps``, ``trainable``, ``lr``, ...).
    """
    if not seeds:
        raise ValueError("need at least one seed in seeds")
    if any(not 0.0 < a < 1.0 for a in wise_alphas):
        raise ValueError(f"WiSE-FT alphas must be strictly between 0 and 1, got {list(wise_alphas)}")
    if "seed" in config:
        raise ValueError("pass seeds=[...], not seed=")
    values: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}
    first: dict[str, torch.nn.Module] = {}

    def add(name: str, figs: dict) -> None:
        entry = values.setdefault(name, {"new": [], "old": [], "old48": []})
        for key in entry:
            entry[key].append(float(figs[key]))

    for k, seed in enumerate(seeds):
        data = concept_data(n_train=n_train, n_test=n_test, n_replay=n_replay, seed=int(seed))
        rows, models = compare_methods(model, tokenizer, data, methods=methods, wise_alpha=None, seed=int(seed), **config)
        for row in rows:
            add(row["method"], row)
            seconds[row["method"]] = seconds.get(row["method"], 0.0) + row["seconds"]
        if "finetune" in models:
            for a in wise_alphas:
                figs = evaluate_concepts(interpolate_weights(model, models["finetune"], a), tokenizer, data)
                add(wise_label(a), {key: 100 * v for key, v in figs.items()})
        if k == 0:
            first = models
    return SeedComparison([int(s) for s in seeds], values, [0.0, *map(float, wise_alphas), 1.0], seconds, first)
