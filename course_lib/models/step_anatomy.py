"""Where the time of one tiny-CLIP training step goes.

``python -m course_lib.models.train_tiny_clip --anatomy`` runs a few real training steps
(same model, optimiser, loss and batch size as the bundled recipe) and reports

* **phases**, wall-clock milliseconds per step: data (sampling and normalising the batch),
  image forward, text forward, loss, backward, optimiser;
* **operator families** from ``torch.profiler`` (self CPU time per step): matrix products,
  attention kernels, convolution, copies and layout changes, everything else;
* the **throughput of the matrix products** in GFLOP/s (the profiler's FLOP count over their
  time), to compare with the machine's peak.

It answers "can this step get much cheaper without changing the model?": if matrix
products already dominate and run near the hardware's speed, only fewer or smaller matrix
products (fewer steps, a smaller model) save time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from open_clip.loss import ClipLoss
from torch.profiler import ProfilerActivity, profile

from .encode import prepare_images
from .tiny_clip import build_tiny_clip, tiny_tokenizer

PHASES = ("data", "image forward", "text forward", "loss", "backward", "optimizer")
FAMILIES = ("matrix products", "attention", "convolution", "copies and layout", "other")
_MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
_LAYOUT_OPS = {"aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::cat"}


def op_family(name: str) -> str:
    """The family of a profiler event name (e.g. ``"aten::addmm"`` -> ``"matrix products"``)."""
    if name in _MATMUL_OPS:
        return "matrix products"
    if "scaled_dot_product" in name:
        return "attention"
    if "convolution" in name:
        return "convolution"
    if name in _LAYOUT_OPS:
        return "copies and layout"
    return "other"


@dataclass
class StepAnatomy:
    """Per-step costs of tiny-CLIP training, all in milliseconds per step."""

    batch_size: int
    steps: int
    threads: int
    phases_ms: dict[str, float]
    families_ms: dict[str, float]
    matmul_gflop: float = 0.0  # floating-point operations of the matrix products per step, 1e9

    @property
    def step_ms(self) -> float:
        """Wall-clock milliseconds of one whole step (sum of the phases)."""
        return sum(self.phases_ms.values())

    @property
    def matmul_gflops(self) -> float:
        """Achieved matrix-product throughput, GFLOP/s."""
        ms = self.families_ms.get("matrix products", 0.0)
        return self.matmul_gflop / (ms / 1e3) if ms > 0 else 0.0

    def table(self) -> str:
        """A plain-text report."""
        lines = [f"tiny-CLIP training step, batch {self.batch_size}, {self.threads} thread(s), "
                 f"mean of {self.steps} steps: {self.step_ms:.0f} ms/step"]
        lines.append(f"  {'phase':<20s}{'ms/step':>9s}{'share':>8s}")
        for name, ms in self.phases_ms.items():
            lines.append(f"  {name:<20s}{ms:9.1f}{100 * ms / self.step_ms:7.1f}%")
        total = sum(self.families_ms.values())
        lines.append(f"  {'operator family':<20s}{'ms/step':>9s}{'share':>8s}  (profiler self CPU time)")
        for name, ms in self.families_ms.items():
            lines.append(f"  {name:<20s}{ms:9.1f}{100 * ms / total:7.1f}%")
        lines.append(f"  matrix products: {self.matmul_gflop:.1f} GFLOP per step at {self.matmul_gflops:.0f} GFLOP/s")
        return "\n".join(lines)


def step_anatomy(batch_size: int = 256, steps: int = 5, warmup: int = 2, seed: int = 0) -> StepAnatomy:
    """Measure ``steps`` tiny-CLIP training steps on the CPU after ``warmup`` unmeasured ones.

    The batch comes from a small ShapeWorld pool (the cost of a step does not depend on the
    pool's size). Phases are timed with ``time.perf_counter`` on separate steps from the
    profiled ones, so the profiler's overhead does not leak into the phase timings.
    """
    from .train_tiny_clip import TrainConfig, make_optimizer, train_step, training_pool

    if batch_size < 2 or steps < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 2, steps >= 1 and warmup >= 0, got {batch_size}, {steps}, {warmup}")
    torch.manual_seed(seed)
    model = build_tiny_clip().train()
    cfg = TrainConfig(batch_size=batch_size)
    opt = make_optimizer(model, cfg)
    loss_fn = ClipLoss()
    images, captions = training_pool(max(2 * batch_size, 1024), seed)
    tokens = tiny_tokenizer()(captions)
    gen = torch.Generator().manual_seed(seed)

    def one_step(clock: dict[str, float] | None) -> None:
        marks = [time.perf_counter()]
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x, t = prepare_images(model, images[idx]), tokens[idx]
        marks.append(time.perf_counter())
        train_step(model, opt, loss_fn, x, t, cfg.lr, phase_done=lambda: marks.append(time.perf_counter()))
        if clock is not None:
            intervals = [end - start for start, end in zip(marks, marks[1:])]
            for name, seconds in zip(PHASES, intervals, strict=True):
                clock[name] += 1e3 * seconds

    for _ in range(warmup):
        one_step(None)
    clock: dict[str, float] = defaultdict(float)
    for _ in range(steps):
        one_step(clock)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(steps):
            one_step(None)
    families: dict[str, float] = {name: 0.0 for name in FAMILIES}
    flops = 0.0
    for event in prof.key_averages():
        families[op_family(event.key)] += event.self_cpu_time_total / 1e3 / steps
        if event.key in _MATMUL_OPS:
            flops += float(event.flops or 0)
    return StepAnatomy(
        batch_size=batch_size,
        steps=steps,
        threads=torch.get_num_threads(),
        phases_ms={name: clock[name] / steps for name in PHASES},
        families_ms=families,
        matmul_gflop=flops / steps / 1e9,
    )
