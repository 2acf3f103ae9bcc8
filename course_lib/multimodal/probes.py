"""Diagnostics for fusion models: what the frozen patch tokens carry, and where attention looks.

* :func:`object_patch_coverage`: which ViT patches each ShapeWorld object covers
  (``[N, K, P]`` fractions), measured on the pixels (objects in one image have distinct
  colours, so an object's pixels are the ones closest to its palette colour).
* :func:`patch_attribute_labels`: per patch the colour / shape of the object covering it
  most, or a background class: the targets of the patch probes.
* :func:`ridge_probe`: accuracy of a closed-form linear (ridge, one-hot targets) probe.
* :func:`layer_probes`: per ViT block, how well a linear probe reads each patch's
  *position*, the colour and the shape of the object under it: which layer to feed a
  fusion model (Alain & Bengio, 2016, linear classifier probes).
* :func:`named_objects`: which object(s) each VQA question names.
* :func:`relation_oracle_features`: relation questions as exact numbers
  ``(x_A, y_A, x_B, y_B, relation one-hot)``: with perfect object positions, is the
  question learnable at all?
* :func:`train_mlp_probe`: a small MLP classifier trained with AdamW on such features.
* :func:`attention_on_objects`: the share of cross-attention that lands on the patches of
  the named objects, against the share a uniform attention would give.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import seed_everything
from ..data.shapeworld import ALL_COLORS, RELATIONS, ShapeWorldBatch

COVERED = 0.25  # a patch "shows" an object when at least this fraction of its pixels belong to it


def _check_grid(batch: ShapeWorldBatch, grid: tuple[int, int]) -> tuple[int, int, int, int]:
    size = batch.images.shape[1]
    gh, gw = int(grid[0]), int(grid[1])
    if gh < 1 or gw < 1 or size % gh or size % gw:
        raise ValueError(f"grid {grid} must divide the image size {size}")
    return size, gh, gw, size // gh


def object_pixel_masks(batch: ShapeWorldBatch) -> np.ndarray:
    """bool ``[N, K, S, S]``: the pixels of each object (all False for absent objects).

    A pixel belongs to object ``k`` when its colour is closer to object ``k``'s palette
    colour than to every other object's and to the background, within 90 (RGB units).
    """
    if len(batch) == 0:
        raise ValueError("empty batch")
    img = batch.images.astype(np.float32)  # [N, S, S, 3]
    palette = np.array([ALL_COLORS[c] for c in batch.config.colors], dtype=np.float32)
    n, k = batch.colors.shape
    dist = np.full((n, k + 1) + img.shape[1:3], np.inf, dtype=np.float32)
    for j in range(k):
        present = batch.colors[:, j] >= 0
        ref = palette[np.clip(batch.colors[:, j], 0, None)]
        d = np.linalg.norm(img - ref[:, None, None, :], axis=-1)
        dist[:, j] = np.where(present[:, None, None], d, np.inf)
    dist[:, k] = 90.0  # a pixel farther than this from every object colour is background
    owner = dist.argmin(axis=1)  # [N, S, S]
    return np.stack([owner == j for j in range(k)], axis=1)


def object_patch_coverage(batch: ShapeWorldBatch, grid: tuple[int, int]) -> np.ndarray:
    """float32 ``[N, K, P]``: fraction of each patch's pixels that belong to each object
    (patches in row-major order, as the ViT flattens them)."""
    size, gh, gw, p = _check_grid(batch, grid)
    masks = object_pixel_masks(batch).astype(np.float32)  # [N, K, S, S]
    n, k = masks.shape[:2]
    blocks = masks.reshape(n, k, gh, size // gh, gw, size // gw).mean(axis=(3, 5))
    return blocks.reshape(n, k, gh * gw)


def patch_attribute_labels(batch: ShapeWorldBatch, grid: tuple[int, int],
                           min_coverage: float = COVERED) -> tuple[np.ndarray, np.ndarray]:
    """``(color, shape)``, int64 ``[N, P]`` each: the attributes of the object covering the
    most of each patch, or the background class (``len(colors)`` / ``len(shapes)``) when no
    object covers ``min_coverage`` of it."""
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    cov = object_patch_coverage(batch, grid)
    best = cov.argmax(axis=1)  # [N, P]
    shown = np.take_along_axis(cov, best[:, None], axis=1)[:, 0] >= min_coverage
    color = np.take_along_axis(batch.colors, best, axis=1)
    shape = np.take_along_axis(batch.shapes, best, axis=1)
    color = np.where(shown, color, len(batch.config.colors))
    shape = np.where(shown, shape, len(batch.config.shapes))
    return color.astype(np.int64), shape.astype(np.int64)


def ridge_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                l2: float = 1e-2) -> float:
    """Test accuracy of a linear probe fitted in closed form (ridge regression on one-hot
    targets, features standardised on the training set, a bias column).

    Args:
        train_x, test_x: float ``[N, D]`` / ``[M, D]``; train_y, test_y: int64 class ids.
        l2: ridge penalty relative to the number of training rows.
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D], got {tuple(train_x.shape)} and {tuple(test_x.shape)}")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y) or len(train_x) == 0 or len(test_x) == 0:
        raise ValueError("need non-empty features with one label per row")
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    if not (torch.isfinite(train_x).all() and torch.isfinite(test_x).all()):
        raise ValueError("features contain NaN or inf")
    if min(int(train_y.min()), int(test_y.min())) < 0:
        raise ValueError("class ids must be >= 0")
    x, xt = train_x.double(), test_x.double()
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mean) / std, (xt - mean) / std
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    xt = torch.cat([xt, torch.ones(len(xt), 1, dtype=x.dtype)], 1)
    classes = int(max(train_y.max(), test_y.max())) + 1
    target = F.one_hot(train_y.long(), classes).double()
    gram = x.T @ x + l2 * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(gram, x.T @ target)
    return float(((xt @ w).argmax(1) == test_y.long()).double().mean())


def layer_probes(model: nn.Module, train: ShapeWorldBatch, test: ShapeWorldBatch,
                 layers: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Linear probes of the patch tokens after each ViT block (unprojected tokens).

    Returns one row per layer: ``position`` (which of the P patches a token is),
    ``color`` and ``shape`` (of the object under the patch, background included) and
    ``shape on objects`` (only patches an object covers: the hard part).
    """
    from .features import image_tokens, patch_grid

    grid = patch_grid(model)
    depth = len(model.visual.transformer.resblocks)
    layers = list(range(depth)) if layers is None else list(layers)
    labels = {name: patch_attribute_labels(b, grid) for name, b in (("train", train), ("test", test))}
    n_patch = grid[0] * grid[1]
    pos = {name: torch.arange(n_patch).repeat(len(b)) for name, b in (("train", train), ("test", test))}
    rows = []
    for layer in layers:
        tok = {name: image_tokens(model, b.images, layer=layer)[:, 1:].flatten(0, 1)
               for name, b in (("train", train), ("test", test))}
        row: dict[str, Any] = {"layer": layer % depth}
        row["position"] = ridge_probe(tok["train"], pos["train"], tok["test"], pos["test"])
        for i, attr in enumerate(("color", "shape")):
            y_tr, y_te = (torch.from_numpy(labels[s][i]).flatten() for s in ("train", "test"))
            row[attr] = ridge_probe(tok["train"], y_tr, tok["test"], y_te)
        y_tr, y_te = (torch.from_numpy(labels[s][1]).flatten() for s in ("train", "test"))
        bg = len(train.config.shapes)
        keep_tr, keep_te = y_tr != bg, y_te != bg
        row["shape on objects"] = ridge_probe(tok["train"][keep_tr], y_tr[keep_tr], tok["test"][keep_te], y_te[keep_te])
        rows.append(row)
    return rows


def named_objects(dataset: Any) -> np.ndarray:
    """int64 ``[M, 2]``: per item of a ``ShapeWorldQADataset``, the object indices its
    question names (colour question: the object with the named shape; shape question: the
    object with the named colour; relation: objects A and B; -1 where none)."""
    batch = dataset.batch
    colors, shapes = list(batch.config.colors), list(batch.config.shapes)
    out = np.full((len(dataset.items), 2), -1, dtype=np.int64)
    for m, (i, qa) in enumerate(dataset.items):
        words = qa.question.split()
        if qa.kind == "color":
            out[m, 0] = int(np.nonzero(batch.shapes[i] == shapes.index(words[-2]))[0][0])
        elif qa.kind == "shape":
            out[m, 0] = int(np.nonzero(batch.colors[i] == colors.index(words[-3]))[0][0])
        elif qa.kind == "relation":
            named = [w for w in words if w in colors]
            out[m] = [int(np.nonzero(batch.colors[i] == colors.index(c))[0][0]) for c in named]
    return out


def relation_oracle_features(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Relation questions as exact numbers: ``X`` float32 ``[R, 8]`` = ``(x_A, y_A, x_B, y_B)``
    (object centres scaled to [-1, 1]) and the relation's one-hot (``RELATIONS`` order);
    ``y`` int64 ``[R]`` = 1 for "yes"."""
    objects = named_objects(dataset)
    batch, size = dataset.batch, dataset.batch.images.shape[1]
    rows, ys = [], []
    for m, (i, qa) in enumerate(dataset.items):
        if qa.kind != "relation":
            continue
        rel = next(r for r in RELATIONS if f" {r} " in qa.question)
        centres = batch.centers[i, objects[m]] / (size / 2) - 1  # [2, 2]
        rows.append(np.concatenate([centres.ravel(), np.eye(len(RELATIONS))[RELATIONS.index(rel)]]))
        ys.append(qa.answer == "yes")
    if not rows:
        raise ValueError("no relation questions in this dataset")
    return torch.tensor(np.array(rows), dtype=torch.float32), torch.tensor(ys, dtype=torch.long)


def train_mlp_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                    hidden: int = 64, steps: int = 500, lr: float = 1e-2, seed: int = 0) -> float:
    """Test accuracy of a one-hidden-layer MLP (GELU) trained full-batch with AdamW."""
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1] or len(train_x) == 0:
        raise ValueError(f"features must be non-empty [N, D] and [M, D], got {tuple(train_x.shape)}, {tuple(test_x.shape)}")
    if steps < 1 or hidden < 1:
        raise ValueError(f"steps and hidden must be >= 1, got {steps}, {hidden}")
    seed_everything(seed)
    classes = int(max(train_y.max(), test_y.max())) + 1
    net = nn.Sequential(nn.Linear(train_x.shape[1], hidden), nn.GELU(), nn.Linear(hidden, classes))
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(net(train_x), train_y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net(test_x).argmax(1) == test_y).float().mean())


def attention_on_objects(attention: torch.Tensor, coverage: np.ndarray,
                         min_coverage: float = COVERED) -> tuple[np.ndarray, np.ndarray]:
    """Share of attention on the patches an object covers, and the uniform-attention share.

    Args:
        attention: ``[M, 1 + P]`` attention of one query over the class + patch tokens.
        coverage: ``[M, P]`` the object's patch coverage (:func:`object_patch_coverage`).

    Returns:
        ``(share, chance)``, float ``[M]`` each: attention mass on the patches with
        coverage >= ``min_coverage``, and their count / (1 + P).
    """
    if attention.ndim != 2 or coverage.ndim != 2 or attention.shape[0] != coverage.shape[0] \
            or attention.shape[1] != coverage.shape[1] + 1:
        raise ValueError(f"attention must be [M, 1 + P] and coverage [M, P], got {tuple(attention.shape)}, "
                         f"{tuple(coverage.shape)}")
    on = coverage >= min_coverage
    share = (attention[:, 1:].detach().cpu().numpy() * on).sum(axis=1)
    return share, on.sum(axis=1) / attention.shape[1]


def oracle_object_tokens(batch: ShapeWorldBatch) -> torch.Tensor:
    """Perfect object tokens ``[N, 1 + K, C + S + 3]``: an empty first token (the class
    token's slot), then per object its colour one-hot, shape one-hot, centre ``(x, y)``
    scaled to [-1, 1] and a presence flag (an absent object's token is all zeros). A
    stand-in for the patch tokens that removes perception: what is left to learn is
    binding and comparison."""
    if len(batch) == 0:
        raise ValueError("empty batch")
    n, k = batch.colors.shape
    n_col, n_shp = len(batch.config.colors), len(batch.config.shapes)
    size = batch.images.shape[1]
    present = torch.from_numpy(batch.colors >= 0)
    color = F.one_hot(torch.from_numpy(batch.colors).clamp(min=0), n_col).float()
    shape = F.one_hot(torch.from_numpy(batch.shapes).clamp(min=0), n_shp).float()
    xy = torch.from_numpy(np.nan_to_num(batch.centers / (size / 2) - 1)).float()
    tokens = torch.cat([color, shape, xy, torch.ones(n, k, 1)], dim=-1) * present[..., None]
    return torch.cat([torch.zeros(n, 1, tokens.shape[-1]), tokens], dim=1)
