"""Buggy and alternative implementations of the 12 tasks, as edits of the solutions.

Each ``Variant`` rewrites one solution file: ``replace`` pairs must each match exactly once
(so a change to the solution breaks the variant loudly instead of silently testing
nothing), and ``append`` adds code at the end (a later definition overrides an earlier
one). ``BUGS`` are typical learner mistakes; each lists the graded tests that must catch
it (a prefix of the test name, so ``test_x`` covers ``test_x[param]``). ``ALTERNATIVES``
are correct implementations written differently from the solution; they must get full
marks (the tests check behaviour, not our internals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Variant:
    task: str
    name: str
    mistake: str
    replace: tuple[tuple[str, str], ...] = ()
    append: str = ""
    catches: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.task.split('/')[1]}__{self.name}"

    def source(self) -> str:
        text = (ROOT / "solutions" / f"{self.task}.py").read_text()
        for old, new in self.replace:
            count = text.count(old)
            if count != 1:
                raise AssertionError(f"variant {self.label}: {old!r} occurs {count} times in the solution")
            text = text.replace(old, new)
        return text + ("\n\n" + self.append.strip() + "\n" if self.append else "")

    def write(self, root: Path) -> Path:
        path = root / self.label / f"{self.task}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.source())
        return path


Q, P, D, B = ("ch1_compression/task1_quantization", "ch1_compression/task2_pruning",
              "ch1_compression/task3_distillation", "ch1_compression/task4_batching")
C, S, R, A = ("ch2_multimodal/task1_contrastive", "ch2_multimodal/task2_sinkhorn", "ch2_multimodal/task3_retrieval",
              "ch2_multimodal/task4_cross_attention")
RB, E, PN, M = ("ch3_continual/task1_replay", "ch3_continual/task2_ewc", "ch3_continual/task3_progressive",
                "ch3_continual/task4_metrics")

BUGS: list[Variant] = [
    # ---- 1.1 quantization
    Variant(Q, "round_half_up", "rounds with floor(v + 0.5) instead of torch.round (half to even)",
            (("torch.round(xf / s)", "torch.floor(xf / s + 0.5)"),), catches=("test_rounding_is_half_to_even",
                                                                              "test_symmetric_hand_worked")),
    Variant(Q, "symmetric_full_range", "symmetric scale over 2**b - 1 levels (max/127.5) instead of max/qmax",
            (("scale = xf.abs().amax(dim=dims) / qmax", "scale = xf.abs().amax(dim=dims) / ((2 ** num_bits - 1) / 2)"),),
            catches=("test_symmetric_hand_worked", "test_per_tensor_matches_torch_quantize_per_tensor[symmetric]")),
    Variant(Q, "range_without_zero", "asymmetric range [min(x), max(x)] instead of [min(x,0), max(x,0)]",
            (("lo = xf.amin(dim=dims).clamp(max=0.0)", "lo = xf.amin(dim=dims)"),
             ("hi = xf.amax(dim=dims).clamp(min=0.0)", "hi = xf.amax(dim=dims)")),
            catches=("test_asymmetric_range_always_contains_zero",)),
    Variant(Q, "no_clamp", "forgets to clamp q to [qmin, qmax] after adding the zero point",
            (("q = torch.clamp(torch.round(xf / s) + z, qmin, qmax).to(torch.int32)",
              "q = (torch.round(xf / s) + z).to(torch.int32)"),), catches=("test_clamps_to_the_integer_range",)),
    Variant(Q, "zero_range_divides_by_zero", "a zero range keeps scale 0 (division by zero)",
            (("    scale = torch.where(scale == 0, torch.ones_like(scale), scale)\n", ""),),
            catches=("test_zero_range_gives_scale_one",)),
    Variant(Q, "per_channel_reduces_along_axis", "per channel: reduces along axis instead of the other dims",
            (("return axis, tuple(shape), [d for d in range(x.dim()) if d != axis]", "return axis, tuple(shape), [axis]"),),
            catches=("test_per_channel_matches_torch_quantize_per_channel", "test_per_channel_on_other_axes")),
    Variant(Q, "int8_storage", "stores q as int8 (asymmetric 255 wraps around) instead of int32",
            (("q = torch.clamp(torch.round(xf / s) + z, qmin, qmax).to(torch.int32)",
              "q = torch.clamp(torch.round(xf / s) + z, qmin, qmax).to(torch.int8)"),),
            catches=("test_output_dtypes_and_shapes", "test_asymmetric_hand_worked")),
    Variant(Q, "dequantize_sign", "dequantizes with (q + zero_point) * scale",
            (("(q.to(torch.float32) - z.to(torch.float32)) * s", "(q.to(torch.float32) + z.to(torch.float32)) * s"),),
            catches=("test_dequantize_per_tensor", "test_dequantize_per_channel")),
    Variant(Q, "divides_input_in_place", "divides x by the scale in place (float32 .to() returns x itself)",
            (("q = torch.clamp(torch.round(xf / s) + z, qmin, qmax).to(torch.int32)",
              "q = torch.clamp(torch.round(xf.div_(s)) + z, qmin, qmax).to(torch.int32)"),),
            catches=("test_inputs_are_not_modified",)),
    Variant(Q, "float16_inside", "computes the statistics and q in float16 (half the memory)",
            (("xf = x.detach().to(torch.float32)", "xf = x.detach().to(torch.float16)"),),
            catches=("test_per_tensor_matches_torch_quantize_per_tensor", "test_other_bit_widths")),
    Variant(Q, "ignores_num_bits", "always quantizes to 8 bits, whatever num_bits says",
            (("    qmin, qmax = _qrange(num_bits, symmetric)\n", "    qmin, qmax = _qrange(8, symmetric)\n"),),
            catches=("test_other_bit_widths",)),
    Variant(Q, "num_bits_unchecked", "no range check on num_bits (1 bit gives qmax = 0 and a division by zero)",
            (("    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 16:\n",
              "    if False:\n"),), catches=("test_num_bits_out_of_range_is_rejected",)),
    Variant(Q, "accepts_empty", "no check for an empty x (amax of nothing fails with a RuntimeError)",
            (('    if x.numel() == 0:\n        raise ValueError("x is empty")\n', ""),),
            catches=("test_empty_input_is_rejected",)),
    Variant(Q, "dequantize_broadcasts", "dequantize without shape checks: parameters broadcast silently or fail "
            "inside torch", append='''
def dequantize_affine(q, scale, zero_point, axis=None):
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point).to(torch.float32)
    if axis is None:
        return (q.to(torch.float32) - zero_point) * scale
    shape = [1] * q.dim()
    shape[axis] = -1
    return (q.to(torch.float32) - zero_point.reshape(shape)) * scale.reshape(shape)''',
            catches=("test_dequantize_rejects_mismatched_parameters",)),
    # ---- 1.2 pruning
    Variant(P, "per_layer", "prunes amount of each layer separately instead of globally", append='''
def global_magnitude_masks(model, amount):
    if not 0.0 <= amount <= 1.0:
        raise ValueError("amount")
    masks = {}
    for name, p in _prunable_weights(model):
        k = round(amount * p.numel())
        keep = torch.ones(p.numel(), dtype=torch.bool)
        if k:
            keep[torch.topk(p.detach().abs().flatten(), k, largest=False).indices] = False
        masks[name] = keep.reshape(p.shape)
    return masks''', catches=("test_hand_worked_two_layers", "test_matches_torch_prune_global_unstructured")),
    Variant(P, "mask_inverted", "True marks the pruned weights (the mask is inverted)",
            (("masks[name] = keep[start : start + p.numel()].reshape(p.shape).clone()",
              "masks[name] = ~keep[start : start + p.numel()].reshape(p.shape)"),),
            catches=("test_hand_worked_two_layers",)),
    Variant(P, "prunes_biases", "prunes the biases of Linear/Conv2d too",
            (("weight_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}",
              "weight_ids = {id(p) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) "
              "for p in m.parameters()}"),), catches=("test_hand_worked_two_layers",)),
    Variant(P, "every_matrix", "prunes every parameter named weight with 2+ dims (Embedding, Conv1d too)",
            (("weight_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}",
              "weight_ids = {id(p) for n, p in model.named_parameters() if n.endswith('weight') and p.dim() > 1}"),),
            catches=("test_matches_torch_prune_global_unstructured",)),
    Variant(P, "truncates_count", "int(amount * total) instead of round(amount * total)",
            (("num_pruned = round(amount * scores.numel())", "num_pruned = int(amount * scores.numel())"),),
            catches=("test_number_pruned_uses_round",)),
    Variant(P, "no_no_grad", "modifies parameters in place without torch.no_grad()",
            (("    with torch.no_grad():\n        for name, mask in masks.items():\n            params[name].masked_fill_",
              "    if True:\n        for name, mask in masks.items():\n            params[name].masked_fill_"),),
            catches=("test_apply_masks_zeroes_pruned_weights_in_place",)),
    Variant(P, "replaces_parameters", "apply_masks assigns new nn.Parameter objects", append='''
def apply_masks(model, masks):
    for name, mask in masks.items():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        setattr(module, attr, nn.Parameter(getattr(module, attr).detach() * mask))''',
            catches=("test_apply_masks_zeroes_pruned_weights_in_place",)),
    Variant(P, "cubic_ignores_begin", "schedule progress measured from step 0 instead of begin_step",
            (("progress = (step - begin_step) / (end_step - begin_step)", "progress = step / (end_step - begin_step)"),),
            catches=("test_cubic_with_offset_window",)),
    Variant(P, "cubic_wrong_power", "uses progress**3 instead of (1 - progress)**3",
            (("(1.0 - progress) ** 3", "(1.0 - progress ** 3)"),), catches=("test_cubic_hand_worked",)),
    Variant(P, "cubic_extrapolates", "keeps applying the formula after end_step",
            (("    if step >= end_step:\n        return float(final_sparsity)\n", ""),),
            catches=("test_cubic_outside_the_window",)),
    Variant(P, "kthvalue_threshold", "threshold from kthvalue, mask |w| > t: every weight tied at the threshold is pruned", append='''
def global_magnitude_masks(model, amount):
    if not (0 <= amount <= 1):
        raise ValueError("amount must be in [0, 1]")
    weights = _prunable_weights(model)
    flat = torch.cat([p.detach().abs().flatten() for _, p in weights])
    k = round(amount * flat.numel())
    if k == 0:
        return {n: torch.ones_like(p, dtype=torch.bool) for n, p in weights}
    threshold = flat.kthvalue(k).values
    return {n: p.detach().abs() > threshold for n, p in weights}''', catches=("test_ties_at_the_threshold",)),
    Variant(P, "ranks_in_float32", "ranks float32 copies of the magnitudes (ties appear in a float64 model)",
            (("scores = torch.cat([p.detach().abs().flatten() for _, p in weights])",
              "scores = torch.cat([p.detach().abs().flatten().float() for _, p in weights])"),),
            catches=("test_float64_model_is_ranked_in_float64",)),
    Variant(P, "masks_on_the_default_device", "builds the mask with torch.ones(n) (on the CPU, whatever the weights' "
            "device)", (("keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)",
                         "keep = torch.ones(scores.numel(), dtype=torch.bool)"),),
            catches=("test_masks_on_the_weights_device",)),
    Variant(P, "cubic_checks_final_only", "checks final_sparsity only (and end == begin, not end < begin)",
            (('    if end_step <= begin_step:\n', '    if end_step == begin_step:\n'),
             ('    for name, value in (("initial_sparsity", initial_sparsity), ("final_sparsity", final_sparsity)):\n',
              '    for name, value in (("final_sparsity", final_sparsity),):\n')),
            catches=("test_cubic_rejects_bad_windows",)),
    # ---- 1.3 distillation
    Variant(D, "reverse_kl", "KL(student || teacher) instead of KL(teacher || student)",
            (("kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)",
              "kl = (log_p_student.exp() * (log_p_student - log_p_teacher)).sum(dim=-1)"),),
            catches=("test_kd_hand_worked", "test_kd_matches_reference")),
    Variant(D, "no_T_squared", "forgets the T**2 factor",
            (("return kl.mean() * t * t", "return kl.mean()"),), catches=("test_kd_is_scaled_by_T_squared",)),
    Variant(D, "T_not_squared", "multiplies by T instead of T**2",
            (("return kl.mean() * t * t", "return kl.mean() * t"),), catches=("test_kd_is_scaled_by_T_squared",)),
    Variant(D, "mean_over_classes", "averages over classes too (F.kl_div reduction='mean')",
            (("kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)",
              "kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).mean(dim=-1)"),),
            catches=("test_kd_hand_worked", "test_kd_matches_reference")),
    Variant(D, "log_of_softmax", "takes log(softmax(...)) instead of log_softmax (underflows)",
            (("log_p_student = F.log_softmax(student_logits / t, dim=-1)",
              "log_p_student = torch.log(F.softmax(student_logits / t, dim=-1))"),
             ("log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)",
              "log_p_teacher = torch.log(F.softmax(teacher_logits / t, dim=-1))")),
            catches=("test_kd_is_stable_for_large_logits",)),
    Variant(D, "detached_student", "detaches the student logits (no gradient)",
            (("F.log_softmax(student_logits / t, dim=-1)", "F.log_softmax(student_logits.detach() / t, dim=-1)"),),
            catches=("test_kd_gradient_reaches_the_student",)),
    Variant(D, "feature_cosine_over_batch", "cosine along the batch dimension (dim=0)",
            (("F.cosine_similarity(student_features, teacher_features, dim=-1)",
              "F.cosine_similarity(student_features, teacher_features, dim=0)"),),
            catches=("test_feature_loss_matches_reference",)),
    Variant(D, "clip_one_direction", "distils image->text only",
            (("return (kd_loss(s_logits, t_logits, temperature) + kd_loss(s_logits.T, t_logits.T, temperature)) / 2",
              "return kd_loss(s_logits, t_logits, temperature)"),), catches=("test_clip_distillation_uses_both_directions",)),
    Variant(D, "clip_not_normalised", "forms similarities of unnormalised features",
            (("s_logits = F.normalize(student_image, dim=-1) @ F.normalize(student_text, dim=-1).T",
              "s_logits = student_image @ student_text.T"),
             ("t_logits = F.normalize(teacher_image, dim=-1) @ F.normalize(teacher_text, dim=-1).T",
              "t_logits = teacher_image @ teacher_text.T")),
            catches=("test_clip_distillation_normalises_features", "test_clip_distillation_matches_reference")),
    Variant(D, "float32_inside", "computes the log-softmaxes in float32 and converts the loss back to the logits' dtype",
            (("log_p_student = F.log_softmax(student_logits / t, dim=-1)",
              "log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)"),
             ("log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)",
              "log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)"),
             ("return kl.mean() * t * t", "return (kl.mean() * t * t).to(student_logits.dtype)")),
            catches=("test_float64_precision[kd_loss]", "test_float64_precision[clip_distillation_loss]")),
    Variant(D, "feature_cosine_in_float32", "feature loss: cosine of float32 copies of the features",
            (("F.cosine_similarity(student_features, teacher_features, dim=-1)",
              "F.cosine_similarity(student_features.float(), teacher_features.float(), dim=-1)"
              ".to(student_features.dtype)"),), catches=("test_float64_precision[feature_distillation_loss]",)),
    Variant(D, "feature_bare_norms", "feature loss: dot / (|s| |t|) without eps (NaN for a zero row)",
            (("(1.0 - F.cosine_similarity(student_features, teacher_features, dim=-1)).mean()",
              "(1.0 - (student_features * teacher_features).sum(-1) / (student_features.norm(dim=-1) * "
              "teacher_features.norm(dim=-1))).mean()"),), catches=("test_zero_feature_vectors",)),
    Variant(D, "clip_bare_norms", "CLIP distillation: x / x.norm() without eps (NaN for a zero row)",
            (("s_logits = F.normalize(student_image, dim=-1) @ F.normalize(student_text, dim=-1).T",
              "unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731\n"
              "    s_logits = unit(student_image) @ unit(student_text).T"),), catches=("test_zero_feature_vectors",)),
    Variant(D, "temperature_nan_accepted", "checks temperature <= 0 only: NaN slips through",
            (("    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \\\n"
              "            or temperature <= 0:\n", "    if temperature <= 0:\n"),), catches=("test_kd_rejects_bad_input",)),
    Variant(D, "accepts_empty_batch", "no check for an empty batch (the mean over no rows is NaN)",
            (('    if a.shape[0] == 0:\n        raise ValueError(f"{names}: empty batch")\n', ""),),
            catches=("test_empty_batch_is_rejected",)),
    Variant(D, "clip_without_checks", "CLIP distillation without its shape checks",
            (('        raise ValueError("all four feature tensors must have the same batch size")\n',
              '        pass\n'),
             ('        raise ValueError("image and text features of the same model must have the same dimension")\n',
              '        pass\n')), catches=("test_feature_and_clip_losses_reject_bad_input",)),
    # ---- 1.4 batching
    Variant(B, "deadline_inclusive", "a request arriving exactly at the deadline opens a new batch (>= instead of >)",
            (("if current and t > times[current[0]] + max_wait:", "if current and t >= times[current[0]] + max_wait:"),),
            catches=("test_arrival_exactly_at_the_deadline_joins",)),
    Variant(B, "full_batch_waits", "a full batch is dispatched at its deadline, not when it fills",
            (("            batches.append((current, t))\n", "            batches.append((current, times[current[0]] + max_wait))\n"),),
            catches=("test_schedule_hand_worked", "test_full_batch_leaves_at_the_filling_arrival")),
    Variant(B, "last_batch_at_last_arrival", "the final open batch leaves at the last arrival, not by its timer",
            (("    if current:\n        batches.append((current, times[current[0]] + max_wait))",
              "    if current:\n        batches.append((current, times[-1]))"),), catches=("test_schedule_hand_worked",)),
    Variant(B, "deadline_from_newest", "the timer restarts with every new request (newest, not oldest)",
            (("if current and t > times[current[0]] + max_wait:", "if current and t > times[current[-1]] + max_wait:"),
             ("            batches.append((current, times[current[0]] + max_wait))\n            current = []\n        current",
              "            batches.append((current, times[current[-1]] + max_wait))\n            current = []\n        current"),
             ("    if current:\n        batches.append((current, times[current[0]] + max_wait))",
              "    if current:\n        batches.append((current, times[current[-1]] + max_wait))")),
            catches=("test_deadline_counts_from_the_oldest_request",)),
    Variant(B, "ignores_busy_worker", "a batch starts at its dispatch time even if the worker is busy",
            (("start = max(float(dispatch_time), worker_free)", "start = float(dispatch_time)"),),
            catches=("test_latencies_wait_for_a_busy_worker",)),
    Variant(B, "latency_from_dispatch", "measures latency from the dispatch time instead of the arrival",
            (("latencies[i] = finish - times[i]", "latencies[i] = finish - float(dispatch_time)"),),
            catches=("test_latencies_hand_worked",)),
    Variant(B, "service_of_the_list", "calls service_time with the batch itself instead of its size",
            (("service_time(len(indices))", "service_time(indices)"),), catches=("test_latencies_hand_worked",)),
    Variant(B, "latencies_in_batch_order", "returns latencies in serving order, not request order", append='''
_request_latencies = request_latencies


def request_latencies(arrival_times, batches, service_time):
    lat = _request_latencies(arrival_times, batches, service_time)
    return [lat[i] for indices, _ in batches for i in indices]''', catches=("test_latencies_are_in_request_order",)),
    Variant(B, "float32_times", "keeps the times in a float32 tensor (torch.tensor's default dtype)",
            (("    times = [float(t) for t in arrival_times]\n",
              "    times = torch.tensor([float(t) for t in arrival_times], dtype=torch.float32).tolist()\n"),
             ("import math\n", "import math\n\nimport torch\n")), catches=("test_unix_timestamps",)),
    Variant(B, "nan_wait_accepted", "checks max_wait < 0 only: NaN passes (and no batch ever times out)",
            (("    if not (isinstance(max_wait, (int, float)) and math.isfinite(max_wait) and max_wait >= 0):\n",
              "    if max_wait < 0:\n"),), catches=("test_schedule_rejects_bad_input",)),
    Variant(B, "fractional_batch_size_accepted", "checks max_batch_size < 1 only: 2.5 passes (no batch ever fills)",
            (("    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:\n",
              "    if max_batch_size < 1:\n"),), catches=("test_schedule_rejects_bad_input",)),
    Variant(B, "empty_batch_accepted", "serves an empty batch (service_time(0)) instead of rejecting it",
            (('        if len(indices) == 0:\n            raise ValueError("a batch is empty")\n', ""),),
            catches=("test_latencies_reject_inconsistent_batches",)),
    # ---- 2.1 contrastive
    Variant(C, "one_direction", "uses the image->text cross-entropy only",
            (("return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2",
              "return F.cross_entropy(logits, targets)"),), catches=("test_clip_loss_averages_both_directions",)),
    Variant(C, "no_logit_scale", "forgets to multiply by logit_scale",
            (("logits = logit_scale * image_features @ text_features.T\n", "logits = image_features @ text_features.T\n"),),
            catches=("test_clip_loss_hand_worked", "test_clip_loss_matches_open_clip")),
    Variant(C, "log_of_softmax", "log(softmax) instead of a stable cross-entropy", append='''
def clip_contrastive_loss(image_features, text_features, logit_scale):
    _check_features(image_features, text_features)
    logits = logit_scale * image_features @ text_features.T
    rows = -torch.log(torch.softmax(logits, dim=1).diagonal()).mean()
    cols = -torch.log(torch.softmax(logits, dim=0).diagonal()).mean()
    return (rows + cols) / 2''', catches=("test_clip_loss_is_stable_at_large_scale",)),
    Variant(C, "siglip_mean_over_pairs", "divides the SigLIP sum by B*B (mean over pairs)",
            (("return -F.logsigmoid(labels * logits).sum() / batch", "return -F.logsigmoid(labels * logits).mean()"),),
            catches=("test_siglip_is_divided_by_the_batch_size", "test_siglip_hand_worked")),
    Variant(C, "siglip_labels_zero_one", "SigLIP labels 1/0 instead of +1/-1",
            (("labels = 2 * torch.eye(batch, dtype=logits.dtype, device=logits.device) - 1",
              "labels = torch.eye(batch, dtype=logits.dtype, device=logits.device)"),),
            catches=("test_siglip_hand_worked", "test_siglip_matches_open_clip")),
    Variant(C, "siglip_log_of_sigmoid", "log(sigmoid(x)) instead of logsigmoid",
            (("return -F.logsigmoid(labels * logits).sum() / batch",
              "return -torch.log(torch.sigmoid(labels * logits)).sum() / batch"),),
            catches=("test_siglip_is_stable_for_very_negative_margins",)),
    Variant(C, "siglip_no_bias", "forgets the logit bias",
            (("logits = logit_scale * image_features @ text_features.T + logit_bias",
              "logits = logit_scale * image_features @ text_features.T"),),
            catches=("test_siglip_hand_worked", "test_siglip_matches_open_clip")),
    Variant(C, "normalises_in_place", "re-normalises the features in place",
            (("    batch = _check_features(image_features, text_features)\n    logits = logit_scale * image_features @ text_features.T\n",
              "    batch = _check_features(image_features, text_features)\n"
              "    image_features /= image_features.norm(dim=-1, keepdim=True)\n"
              "    logits = logit_scale * image_features @ text_features.T\n"),),
            catches=("test_inputs_are_not_modified",)),
    Variant(C, "float32_logits", "computes the logits in float32 and converts them back to the features' dtype",
            (("logits = logit_scale * image_features @ text_features.T\n",
              "logits = (logit_scale * image_features.float() @ text_features.float().T).to(image_features.dtype)\n"),),
            catches=("test_float64_precision",)),
    Variant(C, "float16_logits", "computes the CLIP logits in float16 (half the memory)",
            (("logits = logit_scale * image_features @ text_features.T\n",
              "logits = (logit_scale * image_features.half() @ text_features.half().T).float()\n"),),
            catches=("test_clip_loss_matches_open_clip",)),
    Variant(C, "targets_on_the_default_device", "builds the targets with torch.arange(B) (on the CPU, whatever the "
            "features' device)", (("targets = torch.arange(batch, device=logits.device)", "targets = torch.arange(batch)"),),
            catches=("test_on_the_inputs_device",)),
    Variant(C, "siglip_labels_on_the_default_device", "builds the SigLIP labels with torch.eye(B) (CPU, float32)",
            (("labels = 2 * torch.eye(batch, dtype=logits.dtype, device=logits.device) - 1",
              "labels = 2 * torch.eye(batch) - 1"),), catches=("test_on_the_inputs_device",)),
    Variant(C, "accepts_empty_batch", "no check for B = 0 (the mean over no rows is NaN)",
            (('    if image_features.shape[0] == 0:\n        raise ValueError("empty batch")\n', ""),),
            catches=("test_empty_batch_is_rejected",)),
    # ---- 2.2 sinkhorn
    Variant(S, "exp_domain", "plain Sinkhorn with exp(-C/reg): 0/0 for small reg", append='''
def sinkhorn(a, b, cost, reg, num_iters=1000, tol=1e-9):
    K = torch.exp(-cost / reg)
    u, v = torch.ones_like(a), torch.ones_like(b)
    for _ in range(num_iters):
        u = a / (K @ v)
        v = b / (K.T @ u)
    return u[:, None] * K * v[None, :]''', catches=("test_small_reg_stays_finite_and_accurate",)),
    Variant(S, "kernel_times_reg", "Gibbs kernel exp(-C * reg) instead of exp(-C / reg)",
            (("m = -cost.to(dtype) / reg", "m = -cost.to(dtype) * reg"),), catches=("test_hand_worked_2x2",)),
    Variant(S, "forgets_log_a", "drops log(a) from the row update (uniform rows)",
            (("f = log_a - torch.logsumexp(m + g[None, :], dim=1)", "f = -torch.logsumexp(m + g[None, :], dim=1)"),),
            catches=("test_marginals", "test_matches_pot_sinkhorn_log")),
    Variant(S, "one_iteration", "stops after the first iteration",
            (("        if it % 10 == 0:\n", "        break\n        if it % 10 == 0:\n"),),
            catches=("test_matches_pot_sinkhorn_log",)),
    Variant(S, "rows_and_columns_swapped", "returns the plan transposed (rows follow b)", append='''
_sinkhorn = sinkhorn


def sinkhorn(a, b, cost, reg, num_iters=1000, tol=1e-9):
    return _sinkhorn(b, a, cost.T, reg, num_iters, tol)''', catches=("test_matches_pot_sinkhorn_log",)),
    Variant(S, "projection_by_columns", "normalises the plan's columns instead of its rows",
            (("return (plan / mass) @ target.to(plan.dtype)", "return (plan / plan.sum(dim=0, keepdim=True)) @ target.to(plan.dtype)"),),
            catches=("test_barycentric_projection_hand_worked",)),
    Variant(S, "projection_unnormalised", "forgets to normalise the rows of the plan",
            (("return (plan / mass) @ target.to(plan.dtype)", "return plan @ target.to(plan.dtype)"),),
            catches=("test_barycentric_projection_normalises_rows",)),
    Variant(S, "ignores_num_iters", "always runs up to 1000 iterations, whatever num_iters says",
            (("    for it in range(num_iters):\n", "    for it in range(1000):\n"),),
            catches=("test_num_iters_limits_the_iterations",)),
    Variant(S, "ignores_tol", "stops at a hard-coded 1e-9 instead of tol",
            (("            if row_error < tol:\n", "            if row_error < 1e-9:\n"),), catches=("test_tol_stops_early",)),
    Variant(S, "accepts_bad_arguments", "accepts num_iters=0 (returns the unscaled kernel) and a negative tol",
            (("    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:\n"
              '        raise ValueError(f"num_iters must be an int >= 1, got {num_iters!r}")\n'
              "    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:\n"
              '        raise ValueError(f"tol must be a number >= 0, got {tol!r}")\n', ""),),
            catches=("test_bad_arguments_are_rejected",)),
    Variant(S, "accepts_empty", "an empty a gives an empty plan instead of an error",
            (("    if a.shape[0] == 0 or b.shape[0] == 0:\n"
              '        raise ValueError("a and b must not be empty")\n', ""),), catches=("test_bad_arguments_are_rejected",)),
    Variant(S, "float32_inside", "iterates in float32 and converts the plan back to the inputs' dtype",
            (("    log_a, log_b = a.to(dtype).log(), b.to(dtype).log()\n",
              "    out_dtype, dtype = dtype, torch.float32\n    log_a, log_b = a.to(dtype).log(), b.to(dtype).log()\n"),
             ("    return torch.exp(m + f[:, None] + g[None, :])", "    return torch.exp(m + f[:, None] + g[None, :]).to(out_dtype)")),
            catches=("test_float64_precision",)),
    # ---- 2.3 retrieval
    Variant(R, "dot_product", "ranks by dot product, not cosine",
            (("similarity = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T", "similarity = queries @ gallery.T"),),
            catches=("test_topk_cosine_hand_worked", "test_topk_cosine_matches_faiss_flat_search")),
    Variant(R, "normalise_columns", "normalises along dim 0 (columns) instead of rows",
            (("similarity = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T",
              "similarity = F.normalize(queries, dim=0) @ F.normalize(gallery, dim=0).T"),),
            catches=("test_topk_cosine_matches_faiss_flat_search",)),
    Variant(R, "worst_first", "returns the least similar items",
            (("return similarity.topk(k, dim=1)", "return similarity.topk(k, dim=1, largest=False)"),),
            catches=("test_topk_cosine_hand_worked",)),
    Variant(R, "recall_off_by_one", "looks at the first k+1 items",
            (("any(item in rel for item in row[:k])", "any(item in rel for item in row[: k + 1])"),),
            catches=("test_recall_at_k_hand_worked",)),
    Variant(R, "recall_counts_hits", "counts relevant hits instead of queries with a hit",
            (("any(item in rel for item in row[:k])", "sum(item in rel for item in row[:k])"),),
            catches=("test_recall_at_k_hand_worked",)),
    Variant(R, "l2_index", "flat index with the L2 metric instead of inner product",
            (("index = faiss.IndexFlatIP(d)", "index = faiss.IndexFlatL2(d)"),), catches=("test_flat_index_is_exact",)),
    Variant(R, "index_not_normalised", "indexes the raw embeddings",
            (("    faiss.normalize_L2(vectors)\n", ""),), catches=("test_flat_index_is_exact", "test_ivf_index")),
    Variant(R, "normalises_caller_tensor", "normalises a numpy view of the caller's tensor in place",
            (("vectors = np.ascontiguousarray(embeddings.detach().cpu().to(torch.float32).numpy().copy())",
              "vectors = embeddings.detach().cpu().to(torch.float32).numpy()"),),
            catches=("test_inputs_are_not_modified",)),
    Variant(R, "indices_int32", "returns int32 indices (e.g. converted for FAISS) instead of int64",
            (("    return similarity.topk(k, dim=1)", "    scores, indices = similarity.topk(k, dim=1)\n"
              "    return scores, indices.to(torch.int32)"),), catches=("test_topk_indices_are_int64",)),
    Variant(R, "normalises_by_the_bare_norm", "divides by the row norms itself: a zero vector gives NaN",
            (("similarity = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T",
              "similarity = (queries / queries.norm(dim=1, keepdim=True)) @ (gallery / gallery.norm(dim=1, "
              "keepdim=True)).T"),), catches=("test_topk_cosine_of_zero_vectors",)),
    Variant(R, "float32_scores", "computes the similarities in float32 and converts back to the inputs' dtype",
            (("similarity = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T",
              "similarity = (F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T)"
              ".to(queries.dtype)"),), catches=("test_topk_cosine_float64_precision",)),
    Variant(R, "recall_in_float16", "averages the hits in float16",
            (("    return sum(hits) / len(hits)", "    return torch.tensor(hits, dtype=torch.float16).mean().item()"),),
            catches=("test_recall_at_k_hand_worked", "test_recall_at_k_random")),
    Variant(R, "recall_accepts_no_queries", "no check for an empty query set (divides by zero)",
            (('    if retrieved.shape[0] == 0:\n        raise ValueError("no queries")\n', ""),),
            catches=("test_empty_inputs_are_rejected",)),
    Variant(R, "k_zero_accepted", "accepts k = 0 (an empty top-k; recall of nothing)",
            (("not 1 <= k <= gallery.shape[0]", "not 0 <= k <= gallery.shape[0]"),
             ("not 1 <= k <= retrieved.shape[1]", "not 0 <= k <= retrieved.shape[1]")),
            catches=("test_topk_cosine_rejects_bad_input", "test_recall_at_k_rejects_bad_input")),
    # ---- 2.4 cross-attention
    Variant(A, "scale_by_dim", "scales scores by 1/sqrt(dim) instead of 1/sqrt(head_dim)",
            (("/ math.sqrt(self.head_dim)", "/ math.sqrt(self.dim)"),), catches=("test_matches_multihead_attention[4]",)),
    Variant(A, "mask_inverted", "treats True in context_mask as padding",
            (("~context_mask[:, None, None, :]", "context_mask[:, None, None, :]"),), catches=("test_context_mask",)),
    Variant(A, "softmax_over_queries", "softmax over the query axis",
            (("weights = scores.softmax(dim=-1)", "weights = scores.softmax(dim=-2)"),),
            catches=("test_matches_multihead_attention",)),
    Variant(A, "heads_by_view", "splits heads with a view to [B, H, L, hd] (mixes tokens and heads)",
            (("return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)",
              "return x.reshape(batch, self.num_heads, length, self.head_dim)"),),
            catches=("test_matches_multihead_attention[4]",)),
    Variant(A, "weights_per_head", "returns per-head weights instead of their average",
            (("return out, weights.mean(dim=1)", "return out, weights"),), catches=("test_attention_weights",)),
    Variant(A, "no_out_proj", "skips the output projection",
            (("        out = self.out_proj(out)\n", ""),), catches=("test_matches_multihead_attention",)),
    Variant(A, "mask_after_softmax", "zeroes padded weights after the softmax without renormalising",
            (("            scores = scores.masked_fill(~context_mask[:, None, None, :], float(\"-inf\"))\n"
              "        weights = scores.softmax(dim=-1)\n",
              "            weights = scores.softmax(dim=-1) * context_mask[:, None, None, :]\n"
              "        else:\n            weights = scores.softmax(dim=-1)\n"),),
            catches=("test_context_mask", "test_attention_weights")),
    Variant(A, "float32_softmax", "takes the softmax in float32 (as mixed-precision code does) and converts back",
            (("weights = scores.softmax(dim=-1)", "weights = scores.float().softmax(dim=-1).to(scores.dtype)"),),
            catches=("test_float64_module",)),
    Variant(A, "additive_mask_on_the_default_device", "builds an additive -inf mask with torch.zeros (CPU, float32)",
            (('            scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))\n',
              '            bias = torch.zeros(context_mask.shape).masked_fill(~context_mask, float("-inf"))\n'
              '            scores = scores + bias[:, None, None, :]\n'),), catches=("test_on_the_inputs_device",)),
    Variant(A, "num_heads_unchecked", "checks only dim % num_heads (num_heads = 0 divides by zero)",
            (("if dim <= 0 or num_heads <= 0 or dim % num_heads != 0:", "if dim % num_heads != 0:"),),
            catches=("test_bad_arguments_are_rejected",)),
    # ---- 3.1 replay
    Variant(RB, "off_by_one", "draws the slot from {0..t-1} instead of {0..t}",
            (("torch.randint(0, self._seen + 1, (1,), generator=self._generator)",
              "torch.randint(0, self._seen, (1,), generator=self._generator)"),),
            catches=("test_every_item_is_kept_with_probability_capacity_over_n",)),
    Variant(RB, "keeps_the_first", "never replaces: keeps the first capacity items",
            (("slot = int(torch.randint(0, self._seen + 1, (1,), generator=self._generator))", "slot = self.capacity"),),
            catches=("test_every_item_is_kept_with_probability_capacity_over_n",)),
    Variant(RB, "keeps_the_last", "a ring buffer: keeps the most recent items",
            (("slot = int(torch.randint(0, self._seen + 1, (1,), generator=self._generator))",
              "slot = self._seen % self.capacity"),),
            catches=("test_every_item_is_kept_with_probability_capacity_over_n",)),
    Variant(RB, "global_rng", "uses the global RNG instead of a generator seeded with seed",
            (("int(torch.randint(0, self._seen + 1, (1,), generator=self._generator))",
              "int(torch.randint(0, self._seen + 1, (1,)))"),
             ("torch.randperm(self._size, generator=self._generator)", "torch.randperm(self._size)")),
            catches=("test_same_seed_same_buffer",)),
    Variant(RB, "with_replacement", "samples with replacement (duplicates)",
            (("chosen = torch.randperm(self._size, generator=self._generator)[: min(n, self._size)]",
              "chosen = torch.randint(0, self._size, (min(n, self._size),), generator=self._generator)"),),
            catches=("test_samples_are_distinct_stored_items",)),
    Variant(RB, "counts_batches", "num_seen counts add() calls instead of items",
            (("        return self._seen\n", "        return getattr(self, '_adds', 0)\n"),
             ("        if x.dim() == 0 or y.dim() == 0", "        self._adds = getattr(self, '_adds', 0) + 1\n"
                                                     "        if x.dim() == 0 or y.dim() == 0")),
            catches=("test_len_and_num_seen",)),
    Variant(RB, "labels_not_replaced", "replaces x but forgets to replace y",
            (("                self._y[slot] = y[i]\n", "                if self._size <= slot + 1 and self._seen < self.capacity:\n"
                                                        "                    self._y[slot] = y[i]\n"),),
            catches=("test_every_item_is_kept_with_probability_capacity_over_n",)),
    Variant(RB, "sample_first_n", "sample(n) returns the first n stored items every time",
            (("chosen = torch.randperm(self._size, generator=self._generator)[: min(n, self._size)]",
              "chosen = torch.arange(min(n, self._size))"),), catches=("test_sampling_is_random",)),
    Variant(RB, "sample_returns_views", "sample(n >= len) hands back views of the storage itself",
            (("        chosen = torch.randperm(self._size, generator=self._generator)[: min(n, self._size)]\n",
              "        if n >= self._size:\n            return self._x[: self._size], self._y[: self._size]\n"
              "        chosen = torch.randperm(self._size, generator=self._generator)[: min(n, self._size)]\n"),),
            catches=("test_samples_do_not_alias_the_buffer",)),
    Variant(RB, "storage_in_the_default_dtype", "allocates the storage with torch.empty's default dtype (float32)",
            (("self._x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)",
              "self._x = torch.empty((self.capacity, *x.shape[1:]))"),
             ("self._y = torch.empty((self.capacity, *y.shape[1:]), dtype=y.dtype)",
              "self._y = torch.empty((self.capacity, *y.shape[1:]))")),
            catches=("test_items_of_any_shape",)),
    Variant(RB, "keeps_views_of_the_caller", "a list of (x[i], y[i]) views of the caller's tensors", append='''
class ReservoirBuffer:
    def __init__(self, capacity, seed=0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError("capacity must be an int >= 1")
        self.capacity, self.items, self.seen = capacity, [], 0
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, x, y):
        if x.dim() == 0 or y.dim() == 0 or len(x) != len(y):
            raise ValueError("x and y must have the same length")
        for i in range(len(x)):
            if len(self.items) < self.capacity:
                self.items.append((x[i], y[i]))
            else:
                j = int(torch.randint(0, self.seen + 1, (1,), generator=self.generator))
                if j < self.capacity:
                    self.items[j] = (x[i], y[i])
            self.seen += 1

    def __len__(self):
        return len(self.items)

    @property
    def num_seen(self):
        return self.seen

    def sample(self, n):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("n must be an int >= 0")
        order = torch.randperm(len(self.items), generator=self.generator)[: min(n, len(self.items))].tolist()
        if not order:
            x0, y0 = self.items[0]
            return x0[None][:0].clone(), y0[None][:0].clone()
        return (torch.stack([self.items[j][0] for j in order]), torch.stack([self.items[j][1] for j in order]))''',
            catches=("test_samples_do_not_alias_the_buffer",)),
    # ---- 3.2 EWC
    Variant(E, "squared_batch_gradient", "squares the gradient of the batch loss", append='''
def fisher_diagonal(model, inputs, targets):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    loss = F.cross_entropy(model(inputs), targets)
    grads = torch.autograd.grad(loss, list(params.values()))
    return {n: g.detach() ** 2 for n, g in zip(params, grads)}''', catches=("test_fisher_matches_per_sample_autograd",)),
    Variant(E, "sum_not_mean", "sums the squared gradients instead of averaging",
            (("return {name: f / inputs.shape[0] for name, f in fisher.items()}", "return fisher"),),
            catches=("test_fisher_hand_worked", "test_fisher_matches_per_sample_autograd")),
    Variant(E, "predicted_labels", "uses the model's predictions as targets (true Fisher, not empirical)",
            (("loss = F.cross_entropy(model(inputs[i : i + 1]), targets[i : i + 1])",
              "logits = model(inputs[i : i + 1])\n        loss = F.cross_entropy(logits, logits.argmax(dim=1))"),),
            catches=("test_fisher_hand_worked", "test_fisher_matches_per_sample_autograd")),
    Variant(E, "accumulates_into_grad", "calls backward() and leaves the accumulated .grad behind", append='''
def fisher_diagonal(model, inputs, targets):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(inputs.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(inputs[i : i + 1]), targets[i : i + 1]).backward()
        for n, p in params.items():
            fisher[n] += p.grad.detach() ** 2
    return {n: f / inputs.shape[0] for n, f in fisher.items()}''', catches=("test_fisher_leaves_the_model_as_it_was",)),
    Variant(E, "includes_frozen", "differentiates every parameter, frozen ones too",
            (("params = {name: p for name, p in model.named_parameters() if p.requires_grad}",
              "params = dict(model.named_parameters())"),), catches=("test_fisher_skips_frozen_parameters",)),
    Variant(E, "penalty_half", "multiplies the penalty by 1/2",
            (("term = (f * (p - anchor[name]) ** 2).sum()", "term = 0.5 * (f * (p - anchor[name]) ** 2).sum()"),),
            catches=("test_penalty_hand_worked",)),
    Variant(E, "penalty_detached", "computes the penalty on detached parameters",
            (("        p = params[name]\n", "        p = params[name].detach()\n"),), catches=("test_penalty_gradient",)),
    Variant(E, "penalty_over_all_parameters", "loops over all parameters, not over the Fisher's entries", append='''
def ewc_penalty(model, fisher, anchor):
    total = 0.0
    for name, p in model.named_parameters():
        total = total + (fisher[name] * (p - anchor[name]) ** 2).sum()
    return total''', catches=("test_penalty_hand_worked",)),
    Variant(E, "float32_accumulators", "accumulates the Fisher in torch.zeros(p.shape, device=p.device) (float32)",
            (("fisher = {name: torch.zeros_like(p, memory_format=torch.preserve_format).detach() for name, p in params.items()}",
              "fisher = {name: torch.zeros(p.shape, device=p.device) for name, p in params.items()}"),),
            catches=("test_fisher_follows_the_parameters",)),
    Variant(E, "accumulators_on_the_default_device", "accumulates the Fisher in torch.zeros(p.shape, dtype=p.dtype) "
            "(on the CPU, whatever the parameters' device)",
            (("fisher = {name: torch.zeros_like(p, memory_format=torch.preserve_format).detach() for name, p in params.items()}",
              "fisher = {name: torch.zeros(p.shape, dtype=p.dtype) for name, p in params.items()}"),),
            catches=("test_fisher_follows_the_parameters",)),
    Variant(E, "accepts_no_samples", "no check for an empty batch (0 / 0 = NaN entries)",
            (("if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:", "if inputs.shape[0] != targets.shape[0]:"),),
            catches=("test_fisher_rejects_bad_input",)),
    Variant(E, "penalty_float32_total", "adds the terms into total = torch.zeros(()) in place (float32)", append='''
def ewc_penalty(model, fisher, anchor):
    params = dict(model.named_parameters())
    total = torch.zeros(())
    for name, f in fisher.items():
        if name not in params or name not in anchor or f.shape != params[name].shape \\
                or anchor[name].shape != params[name].shape:
            raise ValueError(f"bad entry {name!r}")
        total += (f * (params[name] - anchor[name]) ** 2).sum()
    return total''', catches=("test_penalty_follows_the_parameters",)),
    Variant(E, "penalty_broadcasts", "no shape checks: a [3] Fisher entry broadcasts over a [2, 3] parameter",
            (("        if f.shape != p.shape or anchor[name].shape != p.shape:\n", "        if False:\n"),),
            catches=("test_penalty_rejects_unknown_names",)),
    # ---- 3.3 progressive
    Variant(PN, "lateral_from_previous_only", "lateral connections only from the previous column",
            (("                for j in range(c):\n", "                for j in range(max(c - 1, 0), c):\n"),
             ("        for j in range(column):\n", "        for j in range(max(column - 1, 0), column):\n")),
            catches=("test_lateral_connections",)),
    Variant(PN, "lateral_same_layer", "lateral input from layer l of earlier columns instead of l-1",
            (("z = z + self.laterals[c][j][l - 1](acts[j][l - 1])", "z = z + self.laterals[c][j][l - 1](acts[j][l])"),),
            catches=("test_lateral_connections",)),
    Variant(PN, "no_freeze", "does not freeze the earlier columns",
            (("        for p in self.parameters():\n            p.requires_grad_(False)\n", ""),),
            catches=("test_earlier_columns_are_frozen",)),
    Variant(PN, "lateral_bias", "lateral adapters with biases",
            (("nn.ModuleList([nn.Linear(h, h, bias=False) for _ in range(L - 1)] + [nn.Linear(h, out_dim, bias=False)])",
              "nn.ModuleList([nn.Linear(h, h) for _ in range(L - 1)] + [nn.Linear(h, out_dim)])"),),
            catches=("test_parameter_count_per_column",)),
    Variant(PN, "relu_before_lateral", "adds the lateral input after the relu",
            (("            hs = [F.relu(layers[0](x))]\n            for l in range(1, self.num_layers):\n"
              "                z = layers[l](hs[l - 1])\n",
              "            hs = [F.relu(layers[0](x))]\n            for l in range(1, self.num_layers):\n"
              "                z = F.relu(layers[l](hs[l - 1]))\n"),
             ("                hs.append(F.relu(z))\n", "                hs.append(z)\n")),
            catches=("test_lateral_connections",)),
    Variant(PN, "no_output_lateral", "no lateral adapters into the output layer",
            (("        for j in range(column):\n            y = y + self.laterals[column][j][-1](acts[j][-1])\n", ""),),
            catches=("test_lateral_connections",)),
    Variant(PN, "reinitialises_columns", "add_column re-initialises every existing layer",
            (("        for p in self.parameters():\n            p.requires_grad_(False)\n",
              "        for p in self.parameters():\n            nn.init.normal_(p)\n            p.requires_grad_(False)\n"),),
            catches=("test_old_columns_keep_their_outputs",)),
    Variant(PN, "lateral_sum_in_default_tensor", "sums the lateral inputs into torch.zeros(B, h) (float32, on the CPU)",
            (("                z = layers[l](hs[l - 1])\n                for j in range(c):\n"
              "                    z = z + self.laterals[c][j][l - 1](acts[j][l - 1])\n",
              "                lateral = torch.zeros(x.shape[0], self.hidden_dim)\n                for j in range(c):\n"
              "                    lateral += self.laterals[c][j][l - 1](acts[j][l - 1])\n"
              "                z = layers[l](hs[l - 1]) + lateral\n"),), catches=("test_float64_and_device",)),
    Variant(PN, "sizes_unchecked", "no checks on in_dim, hidden_dim, num_layers and out_dim",
            (("            if isinstance(value, bool) or not isinstance(value, int) or value < 1:\n",
              "            if False:\n"),
             ("        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:\n",
              "        if False:\n")), catches=("test_bad_sizes_are_rejected",)),
    Variant(PN, "at_least_two_layers", "always builds two hidden layers, even for num_layers=1",
            (("self.in_dim, self.hidden_dim, self.num_layers = in_dim, hidden_dim, num_layers",
              "self.in_dim, self.hidden_dim, self.num_layers = in_dim, hidden_dim, max(num_layers, 2)"),),
            catches=("test_one_hidden_layer",)),
    # ---- 3.4 metrics
    Variant(M, "average_of_diagonal", "average accuracy over the diagonal instead of the last row",
            (('metrics = {"average_accuracy": float(last.mean())', 'metrics = {"average_accuracy": float(acc.diagonal().mean())'),),
            catches=("test_hand_worked_three_tasks",)),
    Variant(M, "bwt_includes_last_task", "backward transfer averaged over all T tasks",
            (('metrics["bwt"] = float((last[:-1] - diag[:-1]).mean())', 'metrics["bwt"] = float((last - diag).mean())'),),
            catches=("test_hand_worked_three_tasks",)),
    Variant(M, "forgetting_includes_last_row", "forgetting's max also over the last row",
            (("best = [acc[j : T - 1, j].max() for j in range(T - 1)]", "best = [acc[j:T, j].max() for j in range(T - 1)]"),),
            catches=("test_forgetting_window",)),
    Variant(M, "forgetting_from_row_zero", "forgetting's max over rows 0..T-2 (includes zero-shot rows)",
            (("best = [acc[j : T - 1, j].max() for j in range(T - 1)]", "best = [acc[0 : T - 1, j].max() for j in range(T - 1)]"),),
            catches=("test_forgetting_window",)),
    Variant(M, "forgetting_clipped", "clips forgetting at 0",
            (('metrics["forgetting"] = float((torch.stack(best) - last[:-1]).mean())',
              'metrics["forgetting"] = float((torch.stack(best) - last[:-1]).clamp(min=0).mean())'),),
            catches=("test_forgetting_window",)),
    Variant(M, "fwt_after_training", "forward transfer from acc[j, j] instead of acc[j-1, j]",
            (("before = torch.stack([acc[j - 1, j] for j in range(1, T)])", "before = torch.stack([acc[j, j] for j in range(1, T)])"),),
            catches=("test_hand_worked_three_tasks",)),
    Variant(M, "transposed", "reads acc[j, i] (task, then stage) instead of acc[i, j]",
            (("    T = acc.shape[0]\n", "    acc = acc.T\n    T = acc.shape[0]\n"),), catches=("test_hand_worked_three_tasks",)),
    Variant(M, "float16_work", "computes the metrics in float16 and converts to Python floats at the end",
            (("acc = torch.as_tensor(acc, dtype=torch.float64)", "acc = torch.as_tensor(acc).to(torch.float16)"),
             ("baseline = torch.as_tensor(random_baseline, dtype=torch.float64)",
              "baseline = torch.as_tensor(random_baseline).to(torch.float16)")),
            catches=("test_hand_worked_three_tasks", "test_random_matrices", "test_float32_accuracies")),
    Variant(M, "accepts_empty", "an empty 0 x 0 matrix is not rejected (fails later with an IndexError)",
            (("if acc.dim() != 2 or acc.shape[0] != acc.shape[1] or acc.shape[0] == 0:",
              "if acc.dim() != 2 or acc.shape[0] != acc.shape[1]:"),), catches=("test_bad_input_is_rejected",)),
]


ALTERNATIVES: list[Variant] = [
    Variant(Q, "reciprocal_minmax_float64", "float64 statistics, multiply by 1/scale, min/max clamping", append='''
def quantize_affine(x, num_bits=8, symmetric=True, axis=None):
    if not torch.isfinite(x).all():
        raise ValueError("x must be finite")
    if x.numel() == 0:
        raise ValueError("empty")
    qmin, qmax = _qrange(num_bits, symmetric)
    axis, bshape, dims = _channel_shape(x, axis)
    xd = x.detach().double()
    if symmetric:
        scale = xd.abs().amax(dim=dims) / qmax
    else:
        lo = torch.minimum(xd.amin(dim=dims), torch.zeros(()))
        hi = torch.maximum(xd.amax(dim=dims), torch.zeros(()))
        scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale).float()
    zp = torch.zeros_like(scale, dtype=torch.int32) if symmetric else \\
        torch.round(qmin - lo.float() / scale).clamp(qmin, qmax).to(torch.int32)
    s = scale.reshape(bshape) if axis is not None else scale
    z = zp.reshape(bshape) if axis is not None else zp
    q = torch.round(x.float() * (1.0 / s)) + z
    q = torch.minimum(torch.maximum(q, torch.tensor(float(qmin))), torch.tensor(float(qmax)))
    return q.to(torch.int32), scale, zp'''),
    Variant(P, "stable_sort", "a stable argsort of all magnitudes; masks split back with torch.split", append='''
def global_magnitude_masks(model, amount):
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount <= 1:
        raise ValueError("amount must be in [0, 1]")
    weights = [(n, m.weight) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    names = {id(p): n for n, p in model.named_parameters()}
    if not weights:
        return {}
    flat = torch.cat([w.detach().abs().reshape(-1) for _, w in weights])
    k = round(amount * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    parts = torch.split(keep, [w.numel() for _, w in weights])
    return {names[id(w)]: part.reshape(w.shape) for (_, w), part in zip(weights, parts)}'''),
    Variant(B, "event_loop", "an explicit event loop with a heap of timers", append='''
import heapq


def schedule_batches(arrival_times, max_batch_size, max_wait):
    if not isinstance(max_batch_size, int) or max_batch_size < 1 or not 0 <= max_wait < float("inf") \\
            or any(b < a for a, b in zip(arrival_times, arrival_times[1:])):
        raise ValueError("bad arguments")
    events = [(t, 0, i) for i, t in enumerate(arrival_times)]  # kind 0 = arrival (before timers at equal times)
    heapq.heapify(events)
    out, batch, generation = [], [], 0
    while events:
        t, kind, payload = heapq.heappop(events)
        if kind == 1:
            if payload == generation and batch:
                out.append((batch, t))
                batch, generation = [], generation + 1
            continue
        if not batch:
            heapq.heappush(events, (t + max_wait, 1, generation))
        batch.append(payload)
        if len(batch) == max_batch_size:
            out.append((batch, t))
            batch, generation = [], generation + 1
    return out'''),
    Variant(S, "pot_order", "POT's update order (columns first), stopping on the change of the potentials", append='''
def sinkhorn(a, b, cost, reg, num_iters=1000, tol=1e-9):
    if not reg > 0 or a.dim() != 1 or b.dim() != 1 or cost.shape != (len(a), len(b)) or (a < 0).any() \\
            or (b < 0).any() or len(a) == 0 or len(b) == 0 or not (isinstance(num_iters, int) and num_iters >= 1) \\
            or not tol >= 0:
        raise ValueError("bad arguments")
    M = -cost / reg
    u = torch.zeros_like(a)
    v = torch.zeros_like(b)
    for _ in range(num_iters):
        v_new = torch.log(b) - torch.logsumexp(M + u[:, None], 0)
        u_new = torch.log(a) - torch.logsumexp(M + v_new[None, :], 1)
        change = max((u_new - u).abs().max().item(), (v_new - v).abs().max().item())
        u, v = u_new, v_new
        if change < tol:
            break
    return torch.exp(M + u[:, None] + v[None, :])'''),
    Variant(S, "row_first_dual_potentials", "row update first, dual potentials in cost units (POT's "
            "formulation), stops when both marginals are within tol in L1", append='''
def sinkhorn(a, b, cost, reg, num_iters=1000, tol=1e-9):
    if a.dim() != 1 or b.dim() != 1 or cost.shape != (a.shape[0], b.shape[0]) or a.numel() == 0 or b.numel() == 0:
        raise ValueError("shapes")
    if bool((a < 0).any()) or bool((b < 0).any()) or not reg > 0 or reg == float("inf"):
        raise ValueError("weights and reg")
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1 or not tol >= 0:
        raise ValueError("num_iters and tol")
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    for _ in range(num_iters):
        f = reg * torch.log(a) - reg * torch.logsumexp((g[None, :] - cost) / reg, dim=1)
        g = reg * torch.log(b) - reg * torch.logsumexp((f[:, None] - cost) / reg, dim=0)
        plan = torch.exp((f[:, None] + g[None, :] - cost) / reg)
        if (plan.sum(1) - a).abs().sum() + (plan.sum(0) - b).abs().sum() < tol:
            break
    return torch.exp((f[:, None] + g[None, :] - cost) / reg)'''),
    Variant(S, "float64_for_float32_inputs", "always iterates in float64 and returns a float64 plan (also for "
            "float32 inputs)", append='''
_sinkhorn64 = sinkhorn


def sinkhorn(a, b, cost, reg, num_iters=1000, tol=1e-9):
    return _sinkhorn64(a.double(), b.double(), cost.double(), reg, num_iters, tol)'''),
    Variant(R, "index_factory", "indexes built with faiss.index_factory", append='''
def build_index(embeddings, kind):
    if embeddings.dim() != 2 or len(embeddings) == 0:
        raise ValueError("embeddings must be a non-empty [N, D] tensor")
    x = embeddings.detach().float().numpy().copy()
    faiss.normalize_L2(x)
    n, d = x.shape
    factory = {"flat": "Flat", "ivf": f"IVF{max(1, int(n ** 0.5) // 2)},Flat", "hnsw": "HNSW16"}
    if kind not in factory:
        raise ValueError(kind)
    index = faiss.index_factory(d, factory[kind], faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    return index'''),
    Variant(R, "float32_recall_and_sorted_scores", "recall@k as a float32 mean; top-k by a full descending sort; "
            "cosine with F.cosine_similarity", append='''
def topk_cosine(queries, gallery, k):
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError("bad shapes")
    if not (isinstance(k, int) and 1 <= k <= gallery.shape[0]):
        raise ValueError("bad k")
    sims = F.cosine_similarity(queries[:, None, :], gallery[None, :, :], dim=-1)
    order = torch.argsort(sims, dim=1, descending=True, stable=True)[:, :k]
    return sims.gather(1, order), order


def recall_at_k(retrieved, relevant, k):
    retrieved = torch.as_tensor(retrieved)
    if retrieved.dim() != 2 or retrieved.shape[0] == 0 or len(relevant) != retrieved.shape[0]:
        raise ValueError("retrieved must be a non-empty [Q, n] with one set per query")
    if not (isinstance(k, int) and 1 <= k <= retrieved.shape[1]):
        raise ValueError("bad k")
    hits = torch.tensor([bool(set(row[:k]) & set(rel)) for row, rel in zip(retrieved.tolist(), relevant)])
    return hits.to(torch.float32).mean().item()'''),
    Variant(A, "sdpa", "F.scaled_dot_product_attention for the outputs", append='''
import torch.nn.functional as F

_forward = CrossModalAttention.forward


def _sdpa_forward(self, query, context, context_mask=None, return_weights=False):
    if return_weights:
        return _forward(self, query, context, context_mask, True)
    if query.shape[0] != context.shape[0]:
        raise ValueError("batch sizes differ")
    if context_mask is not None and context_mask.shape != context.shape[:2]:
        raise ValueError("bad mask")
    q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(context)), self._heads(self.v_proj(context))
    mask = None if context_mask is None else context_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return self.out_proj(out.transpose(1, 2).reshape(query.shape))


CrossModalAttention.forward = _sdpa_forward'''),
    Variant(A, "einsum_and_additive_mask", "einsum over named axes, an additive mask made with new_zeros, "
            "weights averaged with einsum", append='''
def _einsum_forward(self, query, context, context_mask=None, return_weights=False):
    if query.dim() != 3 or context.dim() != 3 or query.shape[0] != context.shape[0] \\
            or query.shape[2] != self.dim or context.shape[2] != self.dim:
        raise ValueError("shapes do not fit")
    b, lq, _ = query.shape
    lc, h, hd = context.shape[1], self.num_heads, self.head_dim
    q = self.q_proj(query).reshape(b, lq, h, hd)
    k = self.k_proj(context).reshape(b, lc, h, hd)
    v = self.v_proj(context).reshape(b, lc, h, hd)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * hd ** -0.5
    if context_mask is not None:
        if context_mask.shape != (b, lc) or context_mask.dtype != torch.bool:
            raise ValueError("bad mask")
        bias = scores.new_zeros(b, lc).masked_fill(~context_mask, float("-inf"))
        scores = scores + bias[:, None, None, :]
    weights = torch.softmax(scores, dim=-1)
    out = self.out_proj(torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, lq, self.dim))
    return (out, torch.einsum("bhqk->bqk", weights) / h) if return_weights else out


CrossModalAttention.forward = _einsum_forward'''),
    Variant(RB, "random_keys", "keeps the capacity items with the smallest random keys (numpy RNG)", append='''
import numpy as np


class ReservoirBuffer:
    def __init__(self, capacity, seed=0):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity, self.rng = capacity, np.random.default_rng(seed)
        self.keys, self.items, self.seen = [], [], 0

    def add(self, x, y):
        if len(x) != len(y):
            raise ValueError("lengths differ")
        for i in range(len(x)):
            self.keys.append(self.rng.random())
            self.items.append((x[i].clone(), y[i].clone()))
            self.seen += 1
        if len(self.keys) > self.capacity:
            order = np.argsort(self.keys)[: self.capacity]
            self.keys = [self.keys[j] for j in order]
            self.items = [self.items[j] for j in order]

    def __len__(self):
        return len(self.items)

    @property
    def num_seen(self):
        return self.seen

    def sample(self, n):
        if n < 0:
            raise ValueError("n must be >= 0")
        chosen = self.rng.choice(len(self.items), size=min(n, len(self.items)), replace=False)
        if len(chosen) == 0:
            x0, y0 = self.items[0]
            return x0[None][:0], y0[None][:0]
        return torch.stack([self.items[j][0] for j in chosen]), torch.stack([self.items[j][1] for j in chosen])'''),
    Variant(E, "torch_func", "per-sample gradients with torch.func.vmap(grad(...))", append='''
from torch.func import functional_call, grad, vmap


def fisher_diagonal(model, inputs, targets):
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise ValueError("inputs and targets must have the same, nonzero length")
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}

    def loss(p, x, y):
        out = functional_call(model, {**p, **frozen}, (x[None],))
        return F.cross_entropy(out, y[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, inputs, targets)
    return {n: (g ** 2).mean(0) for n, g in per_sample.items()}'''),
    Variant(E, "backward_and_restore", "per-sample backward() with .grad saved and restored; penalty as a "
            "Python sum", append='''
def fisher_diagonal(model, inputs, targets):
    if len(inputs) == 0 or len(inputs) != len(targets):
        raise ValueError("inputs and targets must be non-empty and of one length")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    saved = {n: p.grad for n, p in params}
    fisher = {n: torch.zeros_like(p) for n, p in params}
    try:
        for i in range(len(inputs)):
            for _, p in params:
                p.grad = None
            F.cross_entropy(model(inputs[i : i + 1]), targets[i : i + 1]).backward()
            for n, p in params:
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2
    finally:
        for n, p in params:
            p.grad = saved[n]
    return {n: f / len(inputs) for n, f in fisher.items()}


def ewc_penalty(model, fisher, anchor):
    params = dict(model.named_parameters())
    for name, f in fisher.items():
        if name not in params or name not in anchor:
            raise KeyError(name)
        if f.shape != params[name].shape or anchor[name].shape != params[name].shape:
            raise ValueError(f"shape mismatch for {name}")
    return sum((f * (params[n] - anchor[n]).pow(2)).sum() for n, f in fisher.items())'''),
    Variant(PN, "concatenated_laterals", "one Linear over the concatenated features of all earlier columns", append='''
class ProgressiveNet(nn.Module):
    def __init__(self, in_dim, hidden_dim, num_layers=2):
        super().__init__()
        if min(in_dim, hidden_dim, num_layers) < 1:
            raise ValueError("in_dim, hidden_dim and num_layers must be >= 1")
        self.d, self.h, self.L = in_dim, hidden_dim, num_layers
        self.cols = nn.ModuleList()

    def add_column(self, out_dim):
        if out_dim < 1:
            raise ValueError("out_dim must be >= 1")
        for p in self.parameters():
            p.requires_grad_(False)
        k, h = len(self.cols), self.h
        col = nn.ModuleDict({
            "w": nn.ModuleList([nn.Linear(self.d, h)] + [nn.Linear(h, h) for _ in range(self.L - 1)]
                               + [nn.Linear(h, out_dim)]),
        })
        if k:
            col["u"] = nn.ModuleList([nn.Linear(k * h, h, bias=False) for _ in range(self.L - 1)]
                                     + [nn.Linear(k * h, out_dim, bias=False)])
        self.cols.append(col)
        return k

    def forward(self, x, column):
        if not 0 <= column < len(self.cols):
            raise IndexError(column)
        acts = []
        for c in range(column + 1):
            w = self.cols[c]["w"]
            hs = [torch.relu(w[0](x))]
            for l in range(1, self.L + 1):
                z = w[l](hs[-1])
                if c:
                    z = z + self.cols[c]["u"][l - 1](torch.cat([acts[j][l - 1] for j in range(c)], dim=1))
                hs.append(torch.relu(z) if l < self.L else z)
            acts.append(hs)
        return acts[column][-1]'''),
    Variant(D, "manual_logsumexp", "softmaxes and KL written out with logsumexp; manual cosine", append='''
def _two_d_pair(a, b):
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"expected two [B, C] tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError("empty batch")


def kd_loss(student_logits, teacher_logits, temperature):
    _two_d_pair(student_logits, teacher_logits)
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError("temperature must be > 0")
    s = student_logits / temperature
    t = teacher_logits / temperature
    log_q = s - torch.logsumexp(s, dim=1, keepdim=True)
    log_p = t - torch.logsumexp(t, dim=1, keepdim=True)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    return kl.mean() * temperature * temperature


def feature_distillation_loss(student_features, teacher_features):
    _two_d_pair(student_features, teacher_features)
    dot = (student_features * teacher_features).sum(dim=1)
    norms = student_features.norm(dim=1).clamp_min(1e-8) * teacher_features.norm(dim=1).clamp_min(1e-8)
    return (1 - dot / norms).mean()


def clip_distillation_loss(student_image, student_text, teacher_image, teacher_text, temperature):
    for x in (student_image, student_text, teacher_image, teacher_text):
        if x.dim() != 2:
            raise ValueError("features must be [B, D]")
    if len({x.shape[0] for x in (student_image, student_text, teacher_image, teacher_text)}) != 1:
        raise ValueError("batch sizes differ")
    if student_image.shape[1] != student_text.shape[1] or teacher_image.shape[1] != teacher_text.shape[1]:
        raise ValueError("image and text widths of one model differ")
    unit = lambda x: x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    s = unit(student_image) @ unit(student_text).T
    t = unit(teacher_image) @ unit(teacher_text).T
    return 0.5 * (kd_loss(s, t, temperature) + kd_loss(s.T.contiguous(), t.T.contiguous(), temperature))'''),
    Variant(D, "kl_div_in_float64", "F.kl_div(batchmean, log_target) on float64 copies (float64 results for float32 "
            "inputs too); cosine written out with clamped norms", append='''
def kd_loss(student_logits, teacher_logits, temperature):
    if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
        raise ValueError("temperature must be a positive number")
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape or len(student_logits) == 0:
        raise ValueError("logits must be two non-empty [B, C] tensors of one shape")
    s = F.log_softmax(student_logits.double() / temperature, dim=1)
    t = F.log_softmax(teacher_logits.double() / temperature, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature ** 2


def feature_distillation_loss(student_features, teacher_features):
    if student_features.dim() != 2 or student_features.shape != teacher_features.shape or len(student_features) == 0:
        raise ValueError("features must be two non-empty [B, D] tensors of one shape")
    s, t = student_features.double(), teacher_features.double()
    cos = (s * t).sum(1) / (s.norm(dim=1) * t.norm(dim=1)).clamp_min(1e-8)
    return (1 - cos).mean()'''),
    Variant(C, "diagonal_of_log_softmax", "row and column log-softmax by logsumexp, positives read off the diagonal; "
            "SigLIP with softplus", append='''
def _pair(image_features, text_features):
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError("image and text features must both be [B, D] with one shape")
    if image_features.shape[0] == 0:
        raise ValueError("empty batch")


def clip_contrastive_loss(image_features, text_features, logit_scale):
    _pair(image_features, text_features)
    logits = logit_scale * (image_features @ text_features.T)
    rows = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    cols = logits - torch.logsumexp(logits, dim=0, keepdim=True)
    return -(torch.diagonal(rows).mean() + torch.diagonal(cols).mean()) / 2


def siglip_loss(image_features, text_features, logit_scale, logit_bias):
    _pair(image_features, text_features)
    n = image_features.shape[0]
    logits = logit_scale * (image_features @ text_features.T) + logit_bias
    signs = torch.where(torch.eye(n, dtype=torch.bool, device=logits.device), 1.0, -1.0).to(logits.dtype)
    return F.softplus(-signs * logits).sum() / n'''),
    Variant(C, "float64_work", "always computes in float64 (float64 results for float32 features too); targets "
            "with new_tensor / arange on the features' device", append='''
def clip_contrastive_loss(image_features, text_features, logit_scale):
    batch = _check_features(image_features, text_features)
    logits = torch.as_tensor(logit_scale, dtype=torch.float64) * (image_features.double() @ text_features.double().T)
    targets = torch.arange(batch, device=image_features.device)
    return 0.5 * F.cross_entropy(logits, targets) + 0.5 * F.cross_entropy(logits.T, targets)


def siglip_loss(image_features, text_features, logit_scale, logit_bias):
    batch = _check_features(image_features, text_features)
    logits = torch.as_tensor(logit_scale, dtype=torch.float64) * (image_features.double() @ text_features.double().T)
    logits = logits + torch.as_tensor(logit_bias, dtype=torch.float64)
    positive = torch.eye(batch, dtype=torch.bool, device=image_features.device)
    return (F.softplus(-logits[positive]).sum() + F.softplus(logits[~positive]).sum()) / batch'''),
    Variant(M, "python_loops", "plain Python lists and loops", append='''
def continual_metrics(acc, random_baseline=None):
    a = torch.as_tensor(acc, dtype=torch.float64)
    if a.dim() != 2 or a.shape[0] == 0 or a.shape[0] != a.shape[1]:
        raise ValueError("acc must be a non-empty square matrix")
    if torch.isnan(a).any():
        raise ValueError("acc contains NaN")
    rows = a.tolist()
    n = len(rows)
    out = {"average_accuracy": sum(rows[-1]) / n, "bwt": 0.0, "forgetting": 0.0, "fwt": float("nan")}
    if n > 1:
        out["bwt"] = sum(rows[-1][j] - rows[j][j] for j in range(n - 1)) / (n - 1)
        out["forgetting"] = sum(max(rows[l][j] for l in range(j, n - 1)) - rows[-1][j] for j in range(n - 1)) / (n - 1)
    if random_baseline is not None:
        base = torch.as_tensor(random_baseline, dtype=torch.float64).flatten().tolist()
        if len(base) != n or torch.as_tensor(random_baseline).dim() != 1:
            raise ValueError(f"random_baseline must have {n} entries")
        if n > 1:
            out["fwt"] = sum(rows[j - 1][j] - base[j] for j in range(1, n)) / (n - 1)
    return out'''),
    Variant(M, "float32_tensor_ops", "float32 tensor arithmetic throughout (float64 inputs too), Python floats "
            "at the end", append='''
def continual_metrics(acc, random_baseline=None):
    a = torch.as_tensor(acc).to(torch.float32)
    if a.dim() != 2 or a.shape[0] != a.shape[1] or a.numel() == 0:
        raise ValueError("acc must be a non-empty square matrix")
    if torch.isnan(a).any():
        raise ValueError("acc contains NaN")
    T = a.shape[0]
    out = {"average_accuracy": a[-1].mean().item(), "bwt": 0.0, "forgetting": 0.0, "fwt": float("nan")}
    if T > 1:
        out["bwt"] = (a[-1, :-1] - a.diagonal()[:-1]).mean().item()
        best = torch.stack([a[j : T - 1, j].max() for j in range(T - 1)])
        out["forgetting"] = (best - a[-1, :-1]).mean().item()
    if random_baseline is not None:
        base = torch.as_tensor(random_baseline).to(torch.float32)
        if base.shape != (T,):
            raise ValueError("random_baseline has the wrong length")
        if T > 1:
            out["fwt"] = (torch.stack([a[j - 1, j] for j in range(1, T)]) - base[1:]).mean().item()
    return out'''),
]
