"""ShapeWorld: procedurally generated scenes of coloured shapes with language.

Each image holds one to three objects on a 3x3 grid of cells (at most one object per
cell, all colours and all shapes distinct within an image, so every reference such as
"the red object" is unambiguous). Every image comes with

* a caption: ``"a small red circle left of a blue square"``,
* a hard-negative caption that changes exactly one fact (swapped colours, swapped
  shapes, flipped relation, or one attribute replaced by a value absent from the image),
* question/answer pairs of four kinds: ``color``, ``shape``, ``count``, ``relation``,
* attribute labels (colour, shape, size, centre) per object.

Generation is vectorised with NumPy and deterministic from a seed. The default colours
and shapes leave some out (``orange``, ``pink``, ``diamond``, ``ring``): the tokenizer
knows those words, so chapter 3 can teach the tiny CLIP new concepts.

Example::

    from course_lib.data import ShapeWorldConfig, generate
    batch = generate(8, seed=0, config=ShapeWorldConfig(max_objects=2))
    batch.images.shape     # (8, 32, 32, 3) uint8
    batch.captions[0]      # 'a large cyan cross above a purple triangle'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

ALL_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 185, 60),
    "blue": (45, 85, 235),
    "yellow": (235, 220, 35),
    "purple": (150, 55, 215),
    "cyan": (40, 215, 225),
    "orange": (245, 135, 20),
    "pink": (250, 145, 205),
}
ALL_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring")
DEFAULT_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan")
DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: tuple[str, ...] = ("small", "large")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three")
QUESTION_KINDS: tuple[str, ...] = ("color", "shape", "count", "relation")
NEGATIVE_KINDS: tuple[str, ...] = ("swap_color", "swap_shape", "flip_relation", "replace_color", "replace_shape")

GRID = 3  # cells per side
MIN_IMAGE_SIZE = 24
# Object radii in pixels at a 32-pixel image; they scale with the image size.
_RADIUS_AT_32 = {"small": 3.4, "large": 4.9}

# Words used outside captions/questions: prompt templates of zero-shot classification.
TEMPLATE_WORDS: tuple[str, ...] = ("a", "an", "photo", "of", "picture", "image", "shape", "the", "object", "objects")


class QA(NamedTuple):
    """One question about an image, its one-word answer and its kind."""

    question: str
    answer: str
    kind: str


@dataclass(frozen=True)
class ShapeWorldConfig:
    """What scenes to draw.

    Attributes:
        image_size: side in pixels (>= 24).
        min_objects, max_objects: objects per image, 1 <= min <= max <= 3.
        colors, shapes: the palette; names must come from ``ALL_COLORS``/``ALL_SHAPES``.
        size_word_prob: probability that a caption mentions an object's size.
        color_jitter: standard deviation of per-object colour noise (0-255 units).
        pixel_noise: standard deviation of per-pixel noise (0-255 units).
    """

    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 1
    colors: tuple[str, ...] = DEFAULT_COLORS
    shapes: tuple[str, ...] = DEFAULT_SHAPES
    size_word_prob: float = 0.5
    color_jitter: float = 10.0
    pixel_noise: float = 6.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "colors", tuple(self.colors))
        object.__setattr__(self, "shapes", tuple(self.shapes))
        if not isinstance(self.image_size, (int, np.integer)) or self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size={self.image_size!r} is too small for the objects: "
                f"expected an integer >= {MIN_IMAGE_SIZE} pixels"
            )
        if not (1 <= self.min_objects <= self.max_objects <= GRID):
            raise ValueError(
                f"expected 1 <= min_objects <= max_objects <= 3, got {self.min_objects}..{self.max_objects}"
            )
        for c in self.colors:
            if c not in ALL_COLORS:
                raise ValueError(f"unknown colour {c!r}: expected one of {tuple(ALL_COLORS)}")
        for s in self.shapes:
            if s not in ALL_SHAPES:
                raise ValueError(f"unknown shape {s!r}: expected one of {ALL_SHAPES}")
        if len(set(self.colors)) != len(self.colors) or len(set(self.shapes)) != len(self.shapes):
            raise ValueError("colors and shapes must not repeat")
        if len(self.colors) < max(self.max_objects, 2) or len(self.shapes) < max(self.max_objects, 2):
            raise ValueError(
                f"need at least max(max_objects, 2)={max(self.max_objects, 2)} colours and shapes "
                f"(objects in one image have distinct colours and shapes), got "
                f"{len(self.colors)} colours and {len(self.shapes)} shapes"
            )
        if not 0.0 <= self.size_word_prob <= 1.0:
            raise ValueError(f"size_word_prob must be in [0, 1], got {self.size_word_prob}")
        if self.color_jitter < 0 or self.pixel_noise < 0:
            raise ValueError("color_jitter and pixel_noise must be >= 0")

    @property
    def num_classes(self) -> int:
        """Number of colour x shape classes."""
        return len(self.colors) * len(self.shapes)

    @property
    def class_names(self) -> list[str]:
        """``"red circle"``, ``"red square"``, ...: index = color * len(shapes) + shape."""
        return [f"{c} {s}" for c in self.colors for s in self.shapes]


@dataclass
class ShapeWorldBatch:
    """A batch of generated scenes. ``N`` images, at most ``K = config.max_objects`` objects.

    Attributes:
        images: uint8 ``[N, S, S, 3]`` (HWC, RGB).
        num_objects: int64 ``[N]``.
        colors, shapes, sizes: int64 ``[N, K]`` indices into ``config.colors``,
            ``config.shapes`` and ``SIZES``; ``-1`` for absent objects.
        centers: float32 ``[N, K, 2]`` object centres ``(x, y)`` in pixels; NaN if absent.
        captions: one caption per image.
        negatives: one hard-negative caption per image; ``negative_kinds`` says how it differs.
        questions: per image, one :class:`QA` of each applicable kind
            (``relation`` needs two objects).
    """

    images: np.ndarray
    num_objects: np.ndarray
    colors: np.ndarray
    shapes: np.ndarray
    sizes: np.ndarray
    centers: np.ndarray
    captions: list[str]
    negatives: list[str]
    negative_kinds: list[str]
    questions: list[list[QA]]
    config: ShapeWorldConfig = field(repr=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labels(self) -> np.ndarray:
        """int64 ``[N]`` colour x shape class of the first object (``config.class_names``)."""
        return self.colors[:, 0] * len(self.config.shapes) + self.shapes[:, 0]

    def color_names(self, i: int) -> list[str]:
        return [self.config.colors[c] for c in self.colors[i, : self.num_objects[i]]]

    def shape_names(self, i: int) -> list[str]:
        return [self.config.shapes[s] for s in self.shapes[i, : self.num_objects[i]]]


# ----------------------------------------------------------------------------- drawing


def _shape_mask(kind: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean mask of one shape; ``dx, dy`` pixel offsets from the centre (y down)."""
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        h = 0.85 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if kind == "triangle":  # apex up, base at +0.8 r
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8)
    if kind == "cross":
        t = 0.36 * r
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= t) & (ay <= r)) | ((ay <= t) & (ax <= r))
    if kind == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.05 * r
    if kind == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.5 * r) ** 2)
    raise ValueError(f"unknown shape {kind!r}: expected one of {ALL_SHAPES}")


def _distinct_choice(rng: np.random.Generator, n: int, pool: int, k: int) -> np.ndarray:
    """``[n, k]`` indices drawn without replacement from ``range(pool)`` per row."""
    return np.argsort(rng.random((n, pool)), axis=1)[:, :k]


class _Layout(NamedTuple):
    """Per-object attributes of a set of scenes (see :class:`ShapeWorldBatch`)."""

    num_objects: np.ndarray
    colors: np.ndarray
    shapes: np.ndarray
    sizes: np.ndarray
    centers: np.ndarray

    def __getitem__(self, sl):  # type: ignore[override]
        if isinstance(sl, slice):
            return _Layout(*(a[sl] for a in self))
        return tuple.__getitem__(self, sl)


def _draw(rng: np.random.Generator, config: ShapeWorldConfig, layout: _Layout) -> np.ndarray:
    num_objects, colors, shapes, sizes, centers = layout
    n, k = colors.shape
    s = config.image_size
    scale = s / 32.0
    radii = np.array([_RADIUS_AT_32[z] * scale for z in SIZES], dtype=np.float32)
    coords = np.arange(s, dtype=np.float32) + 0.5
    # background: dark grey, its level varies per image, plus pixel noise
    base = rng.uniform(15, 45, size=(n, 1, 1, 1)).astype(np.float32)
    img = base + rng.normal(0.0, config.pixel_noise, size=(n, s, s, 3)).astype(np.float32)
    palette = np.array([ALL_COLORS[c] for c in config.colors], dtype=np.float32)
    for j in range(k):
        present = np.nonzero(num_objects > j)[0]
        if present.size == 0:
            continue
        rgb = palette[colors[present, j]] + rng.normal(0.0, config.color_jitter, size=(present.size, 3))
        for si, kind in enumerate(config.shapes):
            sel = present[shapes[present, j] == si]
            if sel.size == 0:
                continue
            dx = coords[None, None, :] - centers[sel, j, 0][:, None, None]
            dy = coords[None, :, None] - centers[sel, j, 1][:, None, None]
            r = radii[sizes[sel, j]][:, None, None]
            mask = _shape_mask(kind, dx, dy, r)
            colour = rgb[np.searchsorted(present, sel)].astype(np.float32)
            img[sel] = np.where(mask[..., None], colour[:, None, None, :], img[sel])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- language


def _relations(ca: np.ndarray, cb: np.ndarray, cell: float) -> list[str]:
    """Relations that hold for object a with respect to object b (centres ``(x, y)``)."""
    out = []
    if ca[0] < cb[0] - cell / 2:
        out.append("left of")
    if ca[0] > cb[0] + cell / 2:
        out.append("right of")
    if ca[1] < cb[1] - cell / 2:
        out.append("above")
    if ca[1] > cb[1] + cell / 2:
        out.append("below")
    return out


def _phrase(color: str, shape: str, size: str | None) -> str:
    return f"a {size} {color} {shape}" if size else f"a {color} {shape}"


def _describe(
    cols: list[str], shps: list[str], sizes: list[str | None], relation: str | None
) -> str:
    text = _phrase(cols[0], shps[0], sizes[0])
    if len(cols) >= 2:
        text += f" {relation} " + _phrase(cols[1], shps[1], sizes[1])
    if len(cols) == 3:
        text += " and " + _phrase(cols[2], shps[2], sizes[2])
    return text


def _language(
    rng: np.random.Generator, config: ShapeWorldConfig, layout: _Layout
) -> tuple[list[str], list[str], list[str], list[list[QA]]]:
    num_objects, colors, shapes, sizes, centers = layout
    cell = config.image_size / GRID
    n = len(num_objects)
    u = rng.random((n, 12))  # all random choices of one image's text, drawn at once
    size_mask = rng.random((n, 3)) < config.size_word_prob
    captions: list[str] = []
    negatives: list[str] = []
    neg_kinds: list[str] = []
    questions: list[list[QA]] = []
    all_c, all_s = config.colors, config.shapes
    for i in range(n):
        k = int(num_objects[i])
        cols = [all_c[c] for c in colors[i, :k]]
        shps = [all_s[s] for s in shapes[i, :k]]
        szs = [SIZES[z] if size_mask[i, j] else None for j, z in enumerate(sizes[i, :k])]
        ui = u[i]
        rel = None
        true_rels: list[str] = []
        if k >= 2:
            true_rels = _relations(centers[i, 0], centers[i, 1], cell)
            rel = true_rels[int(ui[0] * len(true_rels))]
        captions.append(_describe(cols, shps, szs, rel))

        # hard negative: change exactly one fact
        kinds = ["replace_color", "replace_shape"] + (["swap_color", "swap_shape", "flip_relation"] if k >= 2 else [])
        kind = kinds[int(ui[1] * len(kinds))]
        nc, ns, nrel = list(cols), list(shps), rel
        if kind == "swap_color":
            nc[0], nc[1] = nc[1], nc[0]
        elif kind == "swap_shape":
            ns[0], ns[1] = ns[1], ns[0]
        elif kind == "flip_relation":
            nrel = OPPOSITE[rel]  # type: ignore[index]
        elif kind == "replace_color":
            j = int(ui[2] * k)
            absent = [c for c in all_c if c not in cols]
            nc[j] = absent[int(ui[3] * len(absent))]
        else:
            j = int(ui[2] * k)
            absent = [s for s in all_s if s not in shps]
            ns[j] = absent[int(ui[3] * len(absent))]
        negatives.append(_describe(nc, ns, szs, nrel))
        neg_kinds.append(kind)

        # questions: one of each applicable kind
        j = int(ui[4] * k)
        qa = [
            QA(f"what color is the {shps[j]} ?", cols[j], "color"),
            QA(f"what shape is the {cols[int(ui[5] * k)]} object ?", shps[int(ui[5] * k)], "shape"),
            QA("how many objects are there ?", COUNT_WORDS[k - 1], "count"),
        ]
        if k >= 2:
            a, b = (0, 1) if ui[6] < 0.5 else (1, 0)
            holds = _relations(centers[i, a], centers[i, b], cell)
            if ui[7] < 0.5:
                r_q, ans = holds[int(ui[8] * len(holds))], "yes"
            else:
                false = [r for r in RELATIONS if r not in holds]
                r_q, ans = false[int(ui[8] * len(false))], "no"
            qa.append(QA(f"is the {cols[a]} {shps[a]} {r_q} the {cols[b]} {shps[b]} ?", ans, "relation"))
        questions.append(qa)
    return captions, negatives, neg_kinds, questions


# ----------------------------------------------------------------------------- public API

_CHUNK = 4096


def generate(n: int, seed: int = 0, config: ShapeWorldConfig | None = None) -> ShapeWorldBatch:
    """Generate ``n`` scenes, deterministically from ``seed``.

    Args:
        n: number of images (>= 1).
        seed: non-negative integer; the same ``(n, seed, config)`` gives identical output.
        config: what to draw; defaults to one object per image, 6 colours x 4 shapes.

    Returns:
        A :class:`ShapeWorldBatch`.

    Raises:
        ValueError: ``n < 1`` or a negative seed.
    """
    config = config or ShapeWorldConfig()
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer (number of images), got {n!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = int(n)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    k = config.max_objects
    num_objects = rng.integers(config.min_objects, config.max_objects + 1, size=n)
    colors = _distinct_choice(rng, n, len(config.colors), k)
    shapes = _distinct_choice(rng, n, len(config.shapes), k)
    sizes = rng.integers(0, len(SIZES), size=(n, k))
    cells = _distinct_choice(rng, n, GRID * GRID, k)
    cell = config.image_size / GRID
    radius = np.array([_RADIUS_AT_32[z] for z in SIZES]) * config.image_size / 32.0
    slack = np.maximum(cell / 2 - radius[sizes] - 0.5, 0.0)  # keep shapes inside their cell
    jitter = (rng.random((n, k, 2)) * 2 - 1) * slack[..., None]
    centers = np.stack([(cells % GRID + 0.5) * cell, (cells // GRID + 0.5) * cell], axis=-1) + jitter
    absent = np.arange(k)[None, :] >= num_objects[:, None]
    colors[absent] = -1
    shapes[absent] = -1
    sizes[absent] = -1
    centers = centers.astype(np.float32)
    centers[absent] = np.nan

    layout = _Layout(num_objects, colors, shapes, sizes, centers)
    draw_rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))
    images = np.empty((n, config.image_size, config.image_size, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        images[sl] = _draw(draw_rng, config, layout[sl])
    text_rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2,)))
    captions, negatives, kinds, questions = _language(text_rng, config, layout)
    return ShapeWorldBatch(
        images=images,
        num_objects=num_objects.astype(np.int64),
        colors=colors.astype(np.int64),
        shapes=shapes.astype(np.int64),
        sizes=sizes.astype(np.int64),
        centers=centers,
        captions=captions,
        negatives=negatives,
        negative_kinds=kinds,
        questions=questions,
        config=config,
    )


def vocabulary() -> list[str]:
    """Every word ShapeWorld text (captions, questions, answers, prompt templates) can use,
    for all colours and shapes including those outside the default palette. Sorted."""
    words: set[str] = set(TEMPLATE_WORDS)
    words.update(ALL_COLORS)
    words.update(ALL_SHAPES)
    words.update(SIZES)
    words.update(COUNT_WORDS)
    for r in RELATIONS:
        words.update(r.split())
    for q in ("what color is the", "what shape is the object", "how many objects are there", "is the", "and yes no"):
        words.update(q.split())
    words.update({"?", ","})
    return sorted(words)


def answer_vocabulary(config: ShapeWorldConfig | None = None) -> list[str]:
    """All one-word answers for ``config`` (colours, shapes, counts, yes/no), in a fixed order."""
    config = config or ShapeWorldConfig()
    return list(config.colors) + list(config.shapes) + list(COUNT_WORDS[: config.max_objects]) + ["yes", "no"]


_WORD = re.compile(r"[a-z]+|[^\sa-z]")


def split_words(text: str) -> list[str]:
    """Lower-case word split used by the tokenizer: runs of letters, and every other
    non-space character on its own (``"?"``, ``","``, but also ``"3"`` or ``"-"``, which
    are then unknown words for the tokenizer to reject)."""
    return _WORD.findall(text.lower())
