"""Chapter 1, model compression and acceleration (模型压缩与加速).

Modules, one concept each:

* :mod:`.attention`: ``nn.MultiheadAttention`` rewritten with plain ``nn.Linear`` layers
  (quantizable, prunable by head).
* :mod:`.quantization`: affine quantization arithmetic, per-tensor vs per-channel
  error, INT8 dynamic quantization of CLIP towers, checkpoint size.
* :mod:`.precision`: FP16/BF16 autocast, GradScaler training steps, half copies.
* :mod:`.pruning`: unstructured L1 masks (local/global), sparsity, the cubic schedule
  and a gradual pruner.
* :mod:`.structured`: physically removing attention heads and MLP neurons.
* :mod:`.distillation`: KD losses (output, relational, feature), students that inherit
  the teacher's weights, the training loop.
* :mod:`.engines`: ONNX export and verification, ONNX Runtime sessions and
  quantization (dynamic, static QDQ), TensorRT availability.
* :mod:`.batching`: dynamic batching simulation with measured service times.
* :mod:`.training`: teacher-embedding pools, the zero-shot probe, recovery fine-tuning.
* :mod:`.benchmarking`: interleaved latency measurement and tables.
* :mod:`.pipeline`: prune -> distill -> quantize -> export, end to end.

``python -m course_lib.bench compression`` prints the chapter's comparison table.
"""

from .attention import LinearAttention, unfuse_attention
from .batching import (
    BatchingReport,
    EmpiricalServiceTime,
    InterpolatedServiceTime,
    LinearServiceTime,
    measure_service_times,
    poisson_arrivals,
    request_latencies,
    schedule_batches,
    simulate_batching,
    sweep_max_wait,
)
from .benchmarking import Table, interleaved_benchmark, latency_table, speedups, torch_threads
from .distillation import (
    DistillConfig,
    FeatureProjector,
    StudentSpec,
    distill_clip,
    feature_distillation_loss,
    kd_loss,
    make_student,
    parameter_ratio,
    random_student,
    relational_kd_loss,
)
from .engines import (
    ExportMismatchError,
    OrtModule,
    export_onnx,
    onnx_size_mb,
    ort_quantize_dynamic,
    ort_quantize_static,
    ort_session,
    tensorrt_status,
    verify_onnx,
)
from .precision import amp_train_step, autocast, autocast_dtype, half_copy, make_grad_scaler, underflow_fraction
from .pruning import (
    GradualPruner,
    apply_masks,
    cubic_sparsity,
    layer_sparsity,
    magnitude_masks,
    prune_magnitude,
    sparse_checkpoint_mb,
    sparsity,
    torch_reference_masks,
)
from .quantization import (
    UnsupportedModuleError,
    dequantize_affine,
    fake_quantize,
    fake_quantize_weights,
    model_size_mb,
    quantization_error,
    quantize_affine,
    quantize_dynamic_int8,
    weight_error_table,
)
from .structured import apply_plan, plan_structured, prune_vit
from .training import TeacherPool, ZeroShotProbe, finetune_visual, make_teacher_pool

__all__ = [
    "BatchingReport", "DistillConfig", "EmpiricalServiceTime", "InterpolatedServiceTime", "ExportMismatchError", "FeatureProjector", "GradualPruner",
    "LinearAttention", "LinearServiceTime", "OrtModule", "StudentSpec", "Table", "TeacherPool",
    "UnsupportedModuleError", "ZeroShotProbe", "amp_train_step", "apply_masks", "apply_plan",
    "autocast", "autocast_dtype", "cubic_sparsity", "dequantize_affine", "distill_clip",
    "export_onnx", "fake_quantize", "fake_quantize_weights", "feature_distillation_loss",
    "finetune_visual", "half_copy", "interleaved_benchmark", "kd_loss", "latency_table",
    "layer_sparsity", "magnitude_masks", "make_grad_scaler", "make_student", "make_teacher_pool", "measure_service_times",
    "model_size_mb", "onnx_size_mb", "ort_quantize_dynamic", "ort_quantize_static", "ort_session",
    "parameter_ratio", "plan_structured", "poisson_arrivals", "prune_magnitude", "prune_vit",
    "quantization_error", "quantize_affine", "quantize_dynamic_int8", "random_student",
    "relational_kd_loss", "request_latencies", "schedule_batches", "simulate_batching",
    "sparse_checkpoint_mb", "sparsity", "speedups", "sweep_max_wait", "tensorrt_status",
    "torch_threads", "torch_reference_masks", "underflow_fraction", "unfuse_attention", "verify_onnx",
    "weight_error_table",
]
