"""Train the tiny CLIP contrastively on ShapeWorld.

``python -m course_lib.models.train_tiny_clip`` reproduces the bundled checkpoint
(``course_lib/models/assets/tiny_clip.pt``) from its recorded seed and profile and
prints its SHA-256 and zero-shot accuracy. ``--out PATH`` writes elsewhere;
``--steps``/``--profile`` change the schedule; ``--anatomy`` measures where one step's
time goes instead of training (:mod:`course_lib.models.step_anatomy`).

Data: a fixed pool of ShapeWorld images, half with one object (class-like captions such
as "a small red circle"), half with one to three objects (relational captions). Loss:
open_clip's ``ClipLoss`` (symmetric InfoNCE with a learnable temperature). Optimiser:
AdamW with linear warm-up and cosine decay.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm

from .. import config as course_config
from ..data import ShapeWorldConfig, generate, images_to_tensor, split_seed
from .encode import prepare_images
from .tiny_clip import TINY_CLIP_CONFIG, build_tiny_clip, tiny_tokenizer


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (recorded in the checkpoint)."""

    steps: int = 500
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 40
    pool_size: int = 40_000
    seed: int = 0
    model: dict = field(default_factory=lambda: TINY_CLIP_CONFIG)

    @classmethod
    def for_profile(cls, profile: str | None = None) -> "TrainConfig":
        """The bundled recipe (``quick``) or a longer one (``full``)."""
        if course_config.get_profile(profile) == "quick":
            return cls()
        return cls(steps=3000, pool_size=150_000)


def training_pool(pool_size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Images ``[N, 3, 32, 32]`` in [0, 1] and captions: half single-object scenes, half 1-3 objects."""
    single = generate(pool_size // 2, split_seed("train", seed), ShapeWorldConfig())
    multi = generate(pool_size - pool_size // 2, split_seed("train", seed + 1), ShapeWorldConfig(max_objects=3))
    images = torch.cat([images_to_tensor(single.images), images_to_tensor(multi.images)])
    return images, single.captions + multi.captions


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms, embeddings, logit scale)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    lr: float,
    phase_done: Callable[[], None] | None = None,
) -> float:
    """One contrastive step on a prepared batch (images ``[B, 3, S, S]``, tokens ``[B, L]``); returns the loss.

    ``phase_done``, if given, is called after each of the five phases (image forward, text
    forward, loss, backward, optimizer): :mod:`.step_anatomy` times the phases with it.
    """
    if images.ndim != 4 or tokens.ndim != 2 or images.shape[0] != tokens.shape[0] or images.shape[0] < 2:
        raise ValueError(f"need a batch of B >= 2 images [B, 3, S, S] and their tokens [B, L], got "
                         f"{tuple(images.shape)} and {tuple(tokens.shape)}")
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr}")
    done = phase_done or (lambda: None)
    for group in opt.param_groups:
        group["lr"] = lr
    img = model.encode_image(images, normalize=True)
    done()
    txt = model.encode_text(tokens, normalize=True)
    done()
    loss = loss_fn(img, txt, model.logit_scale.exp())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"contrastive loss is {loss.item()}: the weights or the inputs hold NaN/inf "
                                 "(lower the learning rate or check the batch)")
    opt.zero_grad(set_to_none=True)
    done()
    loss.backward()
    done()
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    done()
    return loss.item()


def train_tiny_clip(
    cfg: TrainConfig | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[torch.nn.Module, list[float]]:
    """Train a tiny CLIP from scratch; returns ``(model, per-step losses)``.

    The run is deterministic for a given ``cfg`` on a given device and thread count.
    """
    cfg = cfg or TrainConfig()
    if cfg.steps < 1 or cfg.batch_size < 2 or cfg.pool_size < cfg.batch_size:
        raise ValueError(f"need steps >= 1, batch_size >= 2 and pool_size >= batch_size, got {cfg}")
    device = torch.device(device) if device is not None else course_config.get_device()
    course_config.seed_everything(cfg.seed)
    model = build_tiny_clip(cfg.model).to(device)
    tokenizer = tiny_tokenizer()
    images, captions = training_pool(cfg.pool_size, cfg.seed)
    tokens = tokenizer(captions)
    opt = make_optimizer(model, cfg)
    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="tiny CLIP", disable=not progress, mininterval=2.0)
    for step in bar:
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
        x = images[idx]
        x = prepare_images(model, x).to(device)
        t = tokens[idx].to(device)
        losses.append(train_step(model, opt, loss_fn, x, t, lr_at(step, cfg)))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return model.cpu(), losses


def state_bytes(model: torch.nn.Module, cfg: TrainConfig) -> bytes:
    """The checkpoint file's bytes: ``{"state_dict", "train_config"}`` via ``torch.save``."""
    buf = io.BytesIO()
    payload = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "train_config": asdict(cfg),
    }
    torch.save(payload, buf)
    return buf.getvalue()


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    from .loading import BUNDLED_CHECKPOINT, BUNDLED_SHA256
    from .zeroshot import zero_shot_evaluate

    p = argparse.ArgumentParser(prog="python -m course_lib.models.train_tiny_clip", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=["quick", "full"], default="quick",
                   help="quick = the bundled recipe (default); full = longer training")
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default: bit-reproducible) or cuda")
    p.add_argument("--out", type=Path, default=None, help="where to write the checkpoint (default: a temp file)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--anatomy", action="store_true",
                   help="do not train: measure where one training step's time goes (phases, operator families)")
    args = p.parse_args(argv)

    if args.anatomy and (args.steps is not None or args.out is not None):
        p.error("--anatomy measures a few steps and trains nothing: --steps and --out do not apply")
    if args.anatomy:
        import os

        from .step_anatomy import step_anatomy

        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # a CUDA build on a CPU machine logs a spurious GPU error

        print(step_anatomy(batch_size=TrainConfig().batch_size, seed=args.seed).table())
        return 0

    cfg = TrainConfig.for_profile(args.profile)
    cfg.seed = args.seed
    if args.steps is not None:
        cfg.steps = args.steps
    t0 = time.perf_counter()
    model, losses = train_tiny_clip(cfg, device=args.device, progress=not args.no_progress)
    elapsed = time.perf_counter() - t0
    data = state_bytes(model, cfg)
    out = args.out or Path("tiny_clip.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    test = generate(2000, split_seed("test", 0), ShapeWorldConfig())
    res = zero_shot_evaluate(model, tiny_tokenizer(), test.images, test.labels, ShapeWorldConfig().class_names)
    print(f"trained {cfg.steps} steps in {elapsed:.1f} s (final loss {np.mean(losses[-20:]):.4f})")
    print(f"zero-shot accuracy on 2,000 test images: {100 * res.accuracy:.2f}%")
    print(f"wrote {out} ({len(data) / 1e6:.2f} MB), sha256 {digest}")
    if BUNDLED_CHECKPOINT.exists():
        same = digest == BUNDLED_SHA256
        print(f"bundled checkpoint sha256 {BUNDLED_SHA256}: {'identical' if same else 'different'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
