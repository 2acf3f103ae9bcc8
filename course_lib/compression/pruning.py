"""Unstructured magnitude pruning: masks, local vs global scope, sparsity, gradual schedule.

Magnitude (L1) pruning removes the weights with the smallest ``|w|``:

* **local**: every layer loses the same fraction ``amount`` of its own weights;
* **global**: the ``round(amount * total)`` smallest weights *across all layers together*
  are removed, so layers with many small weights (often the large MLP matrices) are
  pruned harder and sensitive small layers are spared.

A mask is a bool tensor shaped like the weight, ``True`` = keep. Exactly
``round(amount * n)`` entries are removed, so with ``tau`` the largest removed magnitude,
every removed weight has ``|w| <= tau`` and every kept one ``|w| >= tau``. **Ties at the
threshold** (several entries with ``|w| == tau``, some kept and some removed) are broken by
position: the earlier entry (in flattened order, layers in ``named_parameters`` order) is
pruned first, so the masks are deterministic. ``torch.nn.utils.prune`` removes the same
number of entries via ``torch.topk(|w|, k, largest=False)``, whose choice among equal
values is not specified (on CPU it often prunes *later* entries first). Without ties
at the threshold the two masks are identical -- :func:`torch_reference_masks` computes
torch's, and the tests check equality on real weights; with ties they prune the same
number of entries with the same magnitudes, possibly at different positions.

Gradual pruning (Zhu & Gupta, 2017) raises the sparsity along a cubic schedule while
training continues, so the network can adapt between pruning steps::

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_1 - t_0))^3,   t_0 <= t <= t_1
"""

from __future__ import annotations

import copy
import io
import warnings
import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
SCOPES: tuple[str, ...] = ("local", "global")


def check_amount(amount: float) -> float:
    """``amount`` as a float in [0, 1]; raises ValueError otherwise (bools, NaN, strings too)."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 <= float(amount) <= 1.0:
        raise ValueError(f"pruning amount must be a fraction in [0, 1], got {amount!r}")
    return float(amount)


def prunable_weights(model: nn.Module, module_types: tuple[type[nn.Module], ...] = PRUNABLE) -> dict[str, nn.Parameter]:
    """``{name: weight}`` of every ``module_types`` layer, with names as in
    ``model.named_parameters()`` (e.g. ``"transformer.resblocks.0.mlp.c_fc.weight"``)."""
    out: dict[str, nn.Parameter] = {}
    for mname, module in model.named_modules():
        if isinstance(module, module_types) and isinstance(getattr(module, "weight", None), nn.Parameter):
            out[f"{mname}.weight" if mname else "weight"] = module.weight
    return out


def _smallest_mask(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Bool mask over a flat score vector with the ``n_prune`` smallest set to False."""
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_prune > 0:
        order = torch.argsort(scores, stable=True)
        mask[order[:n_prune]] = False
    return mask


def magnitude_masks(
    model: nn.Module,
    amount: float,
    scope: str = "global",
    module_types: tuple[type[nn.Module], ...] = PRUNABLE,
) -> dict[str, torch.Tensor]:
    """L1 magnitude masks (True = keep) for the weights of ``module_types`` layers.

    Args:
        model: the network (not modified).
        amount: fraction of weights to remove, in [0, 1].
        scope: ``"local"`` (per layer, ``round(amount * numel)`` each) or ``"global"``
            (``round(amount * total)`` over all the layers together).

    Returns:
        ``{parameter name: bool tensor shaped like the weight}``.

    Raises:
        ValueError: ``amount`` outside [0, 1], unknown scope, or no prunable layer.
    """
    amount = check_amount(amount)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    weights = prunable_weights(model, module_types)
    if not weights:
        raise ValueError(f"model has no {[t.__name__ for t in module_types]} weights to prune")
    if scope == "local":
        return {
            name: _smallest_mask(w.detach().abs().flatten(), round(amount * w.numel())).view_as(w)
            for name, w in weights.items()
        }
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    mask = _smallest_mask(flat, round(amount * flat.numel()))
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = mask[start : start + w.numel()].view_as(w)
        start += w.numel()
    return out


def _check_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise KeyError(f"mask {name!r} names no parameter of the model")
        if mask.shape != params[name].shape or mask.dtype != torch.bool:
            raise ValueError(f"mask {name!r} must be bool {tuple(params[name].shape)}, got {mask.dtype} {tuple(mask.shape)}")
    return params


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero, in place, the weights whose mask entry is False."""
    params = _check_masks(model, masks)
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def prune_magnitude(model: nn.Module, amount: float, scope: str = "global", inplace: bool = False) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """One-shot magnitude pruning: ``(pruned model, masks)``; a copy unless ``inplace``."""
    target = model if inplace else copy.deepcopy(model)
    masks = magnitude_masks(target, amount, scope)
    apply_masks(target, masks)
    return target, masks


def torch_reference_masks(model: nn.Module, amount: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """The same masks computed by ``torch.nn.utils.prune`` (``l1_unstructured`` per layer,
    or ``global_unstructured`` with ``L1Unstructured``) on a copy of ``model``."""
    amount = check_amount(amount)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    twin = copy.deepcopy(model)
    names = list(prunable_weights(twin))
    modules = dict(twin.named_modules())
    targets = [(modules[n[: -len(".weight")]] if n != "weight" else twin, "weight") for n in names]
    if scope == "local":
        for module, pname in targets:
            torch_prune.l1_unstructured(module, pname, amount=amount)
    else:
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=amount)
    return {n: m.weight_mask.bool() for n, (m, _) in zip(names, targets)}


def sparsity(model: nn.Module, module_types: tuple[type[nn.Module], ...] = PRUNABLE) -> float:
    """Fraction of exactly-zero entries over the weights of ``module_types`` layers."""
    weights = list(prunable_weights(model, module_types).values())
    if not weights:
        raise ValueError("model has no prunable weights")
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def layer_sparsity(model: nn.Module, module_types: tuple[type[nn.Module], ...] = PRUNABLE) -> dict[str, float]:
    """``{weight name: fraction of zeros}`` per prunable layer."""
    return {n: float((w == 0).float().mean()) for n, w in prunable_weights(model, module_types).items()}


def sparse_checkpoint_mb(model: nn.Module, module_types: tuple[type[nn.Module], ...] = PRUNABLE) -> float:
    """Size in MB of the state dict with prunable 2-D weights stored in CSR (float32
    values, int32 indices) and everything else dense: what unstructured sparsity saves
    on disk. (At low sparsity CSR is *larger* than dense: 8 bytes per kept weight.)"""
    state = {}
    sparse_names = set(prunable_weights(model, module_types))
    for name, t in model.state_dict().items():
        if name in sparse_names:
            dense = t.detach().reshape(t.shape[0], -1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                csr = dense.to_sparse_csr()
            state[name] = (csr.crow_indices().int(), csr.col_indices().int(), csr.values(), tuple(t.shape))
        else:
            state[name] = t
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes / 1e6


# ---------------------------------------------------------------------------------------
# Gradual pruning
# ---------------------------------------------------------------------------------------


def cubic_sparsity(step: int, begin_step: int, end_step: int, initial_sparsity: float, final_sparsity: float) -> float:
    """Zhu & Gupta's cubic sparsity schedule (see the module docstring).

    Raises:
        ValueError: ``end_step <= begin_step`` or sparsities outside [0, 1].
    """
    check_amount(initial_sparsity)
    check_amount(final_sparsity)
    if end_step <= begin_step:
        raise ValueError(f"end_step ({end_step}) must be greater than begin_step ({begin_step})")
    progress = min(max((step - begin_step) / (end_step - begin_step), 0.0), 1.0)
    remaining = (1.0 - progress) ** 3  # 1 before the ramp, 0 after it
    return float(final_sparsity - (final_sparsity - initial_sparsity) * remaining)


class GradualPruner:
    """Raise the sparsity of ``model`` along the cubic schedule during training.

    Call :meth:`update` once per training step *before* the forward pass (it re-prunes
    every ``frequency`` steps inside ``[begin_step, end_step]``) and :meth:`enforce`
    right *after* ``optimizer.step()`` (pruned weights stay exactly zero although the
    optimizer's momentum would move them).

    Args:
        model: the network being trained (modified in place).
        final_sparsity: target fraction of zeros in [0, 1].
        begin_step, end_step: where the schedule ramps up.
        frequency: steps between two pruning events (>= 1).
        initial_sparsity: sparsity at ``begin_step``.
        scope: ``"global"`` or ``"local"`` (see :func:`magnitude_masks`).
    """

    def __init__(
        self,
        model: nn.Module,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        frequency: int = 10,
        initial_sparsity: float = 0.0,
        scope: str = "global",
        module_types: tuple[type[nn.Module], ...] = PRUNABLE,
    ):
        cubic_sparsity(begin_step, begin_step, end_step, initial_sparsity, final_sparsity)  # validates
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.model = model
        self.final_sparsity = final_sparsity
        self.initial_sparsity = initial_sparsity
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency
        self.scope = scope
        self.module_types = module_types
        self.masks: dict[str, torch.Tensor] | None = None
        self.history: list[tuple[int, float]] = []

    def target(self, step: int) -> float:
        """Scheduled sparsity at ``step``."""
        return cubic_sparsity(step, self.begin_step, self.end_step, self.initial_sparsity, self.final_sparsity)

    def update(self, step: int) -> float:
        """Re-prune to the scheduled sparsity if ``step`` is a pruning step; returns the
        sparsity the masks now impose."""
        due = step >= self.begin_step and (step - self.begin_step) % self.frequency == 0 and step <= self.end_step
        last = step >= self.end_step and (not self.history or self.history[-1][1] < self.final_sparsity)
        first = self.masks is None and step >= self.begin_step
        if due or last or first:
            s = self.target(step)
            self.masks = magnitude_masks(self.model, s, self.scope, self.module_types)
            apply_masks(self.model, self.masks)
            self.history.append((step, s))
        return self.history[-1][1] if self.history else 0.0

    def enforce(self) -> None:
        """Re-zero the pruned weights (call after each optimizer step)."""
        if self.masks is not None:
            apply_masks(self.model, self.masks)


def masks_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of False entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("no masks")
    return sum(int((~m).sum()) for m in masks.values()) / total
