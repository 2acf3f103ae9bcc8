"""Inference engines: ONNX export, ONNX Runtime sessions and quantization, TensorRT.

* :func:`export_onnx` writes a module to one ``.onnx`` file with a dynamic batch axis and
  :func:`verify_onnx` proves that ONNX Runtime computes the same outputs as torch
  (default tolerance 1e-4), raising :class:`ExportMismatchError` otherwise.
* :func:`ort_session` opens a session with a chosen graph-optimization level (constant
  folding, node fusions such as LayerNorm/GELU/attention, memory planning) and thread count.
* :func:`ort_quantize_dynamic` (int8 weights, activations quantized per call) and
  :func:`ort_quantize_static` (int8 weights *and* activations in the QDQ format, with
  scales calibrated on sample inputs) produce quantized ONNX files.
* :func:`tensorrt_status` says whether TensorRT can run here; GPU paths are only used
  when a CUDA device and the matching ONNX Runtime provider / torch-tensorrt exist.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.util
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

GRAPH_LEVELS: tuple[str, ...] = ("disable", "basic", "extended", "all")


class ExportMismatchError(RuntimeError):
    """The exported model's outputs differ from torch's beyond the tolerance."""


def _ort():
    import onnxruntime  # imported lazily: heavy, and only needed here

    return onnxruntime


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    input_name: str = "input",
    output_name: str = "output",
    dynamic_batch: bool = True,
    opset: int = 17,
    dynamo: bool = False,
    atol: float | None = 1e-4,
) -> Path:
    """Export ``module`` (called as ``module(example)``) to a single ONNX file.

    Args:
        module: put in eval mode for the export (and restored afterwards).
        example: an input batch; with ``dynamic_batch`` the first axis is symbolic.
        path: the ``.onnx`` file to write.
        opset: ONNX opset version.
        dynamo: use the ``torch.export``-based exporter (needs ``onnxscript`` and a
            batch of at least 2 for a dynamic axis; slower to export) instead of the
            TorchScript-based one.
        atol: after writing, run the file with ONNX Runtime on ``example`` (and on its
            first row when the batch axis is dynamic) and raise
            :class:`ExportMismatchError` beyond this tolerance; ``None`` skips the check.

    Returns:
        ``path`` as a ``Path``. The file is checked with ``onnx.checker``.
    """
    import onnx

    if not isinstance(example, torch.Tensor) or example.numel() == 0:
        raise ValueError("example must be a non-empty tensor batch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dynamo:
                if dynamic_batch and example.shape[0] < 2:
                    raise ValueError("the dynamo exporter needs an example batch of at least 2 for a dynamic batch axis")
                shapes = {next(iter(_forward_arg_names(module))): {0: torch.export.Dim("batch")}} if dynamic_batch else None
                torch.onnx.export(
                    module, (example,), str(path), input_names=[input_name], output_names=[output_name],
                    dynamic_shapes=shapes, opset_version=max(opset, 18), dynamo=True, external_data=False,
                )
            else:
                axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(
                    module, (example,), str(path), input_names=[input_name], output_names=[output_name],
                    dynamic_axes=axes, opset_version=opset, dynamo=False,
                )
        onnx.checker.check_model(str(path))
        if atol is not None:
            inputs = [example, example[:1]] if dynamic_batch else [example]
            verify_onnx(module, ort_session(path, threads=1), inputs, atol=atol)
    finally:
        module.train(was_training)
    return path


def _forward_arg_names(module: nn.Module) -> list[str]:
    import inspect

    return [p for p in inspect.signature(module.forward).parameters if p != "self"]


def ort_session(
    path: str | Path,
    graph_optimization: str = "all",
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    optimized_model_path: str | Path | None = None,
):
    """An ``onnxruntime.InferenceSession`` for ``path``.

    Args:
        graph_optimization: one of :data:`GRAPH_LEVELS` (``"all"`` adds layout and
            hardware-specific fusions to ``"extended"``).
        threads: intra-op threads; ``None`` uses ``torch.get_num_threads()`` so that
            ONNX Runtime and torch are compared on the same thread budget.
        providers: execution providers in priority order; default CPU.
        optimized_model_path: also write the optimized graph there (to inspect it).
    """
    ort = _ort()
    if graph_optimization not in GRAPH_LEVELS:
        raise ValueError(f"graph_optimization must be one of {GRAPH_LEVELS}, got {graph_optimization!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    threads = torch.get_num_threads() if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"]))


def ort_run(session, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run a one-input, one-output session on ``x`` (float32); returns the output array."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return session.run(None, {session.get_inputs()[0].name: arr.astype(np.float32, copy=False)})[0]


class OrtModule:
    """Wrap a one-input ONNX Runtime session as a callable ``Tensor -> Tensor`` (float32,
    CPU), so it can be evaluated and benchmarked like a torch module."""

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


@torch.no_grad()
def max_abs_difference(module: nn.Module, session, inputs: Sequence[torch.Tensor]) -> float:
    """Largest ``|torch - onnxruntime|`` over the outputs for ``inputs``."""
    if len(inputs) == 0:
        raise ValueError("need at least one input batch to compare")
    module.eval()
    worst = 0.0
    for x in inputs:
        ref = module(x).detach().float().cpu().numpy()
        out = ort_run(session, x)
        if out.shape != ref.shape:
            raise ExportMismatchError(f"ONNX output shape {out.shape} != torch output shape {ref.shape}")
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def verify_onnx(module: nn.Module, session, inputs: Sequence[torch.Tensor], atol: float = 1e-4) -> float:
    """Check ONNX Runtime against torch on ``inputs``; returns the max abs difference.

    Raises:
        ExportMismatchError: a difference above ``atol`` (or a NaN), or a shape mismatch.
    """
    diff = max_abs_difference(module, session, inputs)
    if not diff <= atol:
        raise ExportMismatchError(f"ONNX Runtime disagrees with torch: max |difference| {diff:.3g} > atol {atol:g}")
    return diff


def onnx_size_mb(path: str | Path) -> float:
    """File size in MB (1e6 bytes)."""
    return os.path.getsize(path) / 1e6


def _kernel_times_per_run(events: list[dict]) -> list[dict[str, float]]:
    """``[{op_type: kernel ms}]`` per ``model_run`` of one ONNX Runtime profile (warm-up dropped)."""
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[1:]  # drop the warm-up run
    per_run: list[dict[str, float]] = [{} for _ in windows]
    starts = [w[0] for w in windows]
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, event["ts"]) - 1
        if 0 <= i < len(windows) and event["ts"] <= windows[i][1]:
            op = event["args"]["op_name"]
            per_run[i][op] = per_run[i].get(op, 0.0) + event["dur"] / 1e3
    if not per_run:
        raise RuntimeError("ONNX Runtime's profile recorded no runs")
    return per_run


def ort_op_profiles(paths: dict[str, str | Path], x: torch.Tensor | np.ndarray, runs: int = 20,
                    threads: int = 1) -> dict[str, list[dict[str, float]]]:
    """Kernel time per op type of several ONNX models on ``x``, profiled *interleaved*.

    One profiling session per model; after a warm-up run each, the sessions run
    round-robin (A, B, C, A, B, C, ...) ``runs`` times, so a change of the machine's load
    reaches every model alike (as in :func:`.benchmarking.interleaved_benchmark`).

    Returns:
        ``{name: [{op_type: kernel ms} for each run]}``.
    """
    import json

    ort = _ort()
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not paths:
        raise ValueError("no models to profile")
    arr = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float32, copy=False)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for i, (name, path) in enumerate(paths.items()):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / f"ort_profile_{i}")
            sessions[name] = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feeds = {name: {s.get_inputs()[0].name: arr} for name, s in sessions.items()}
        for _ in range(runs + 1):  # the first round is the warm-up
            for name, s in sessions.items():
                s.run(None, feeds[name])
        return {name: _kernel_times_per_run(json.loads(Path(s.end_profiling()).read_text())) for name, s in sessions.items()}


def ort_op_profile(path: str | Path, x: torch.Tensor | np.ndarray, runs: int = 20, threads: int = 1,
                   per_run: bool = False) -> dict[str, float] | list[dict[str, float]]:
    """Where ONNX Runtime spends its time on ``x``: kernel time per op type, in ms per run.

    Runs ``path`` ``runs`` times (after one warm-up run) with ONNX Runtime's profiler and
    sums the kernel durations of the nodes by op type (e.g. ``MatMul``,
    ``DynamicQuantizeMatMul``, ``LayerNormalization``) within each run. Returns
    ``{op_type: median ms per run}`` sorted by time, largest first (the median over runs
    resists a busy machine; the profiler's own overhead makes the sum a little larger
    than an unprofiled run). With ``per_run=True`` it returns the ``runs`` dicts
    ``{op_type: ms}`` themselves (the samples behind the medians). Several models:
    :func:`ort_op_profiles` (interleaved).
    """
    runs_ms = ort_op_profiles({"model": path}, x, runs=runs, threads=threads)["model"]
    if per_run:
        return runs_ms
    ops = {op for run in runs_ms for op in run}
    medians = {op: float(np.median([run.get(op, 0.0) for run in runs_ms])) for op in ops}
    return dict(sorted(medians.items(), key=lambda kv: -kv[1]))


def preprocess_for_quantization(path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime's recommended pre-processing (graph optimization + shape inference)
    before quantization."""
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantization tools log advice through the root logger; mute it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def ort_quantize_dynamic(
    path: str | Path,
    out_path: str | Path,
    per_channel: bool = False,
    preprocess: bool = False,
    op_types: Sequence[str] | None = None,
) -> Path:
    """INT8 dynamic quantization of an ONNX model: MatMul/Gemm weights stored as int8,
    activation scales computed at run time (uint8 activations x int8 weights, the fast
    combination on x86). ``preprocess`` runs :func:`preprocess_for_quantization` first.
    ``op_types`` restricts quantization to these ONNX op types (e.g. ``("MatMul", "Gemm")``
    leaves the patch-embedding ``Conv`` in float: on x86 CPUs without VNNI, ONNX Runtime's
    ``ConvInteger`` is slower than its float ``Conv``); ``None`` keeps ONNX Runtime's
    default set. Returns ``out_path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src = preprocess_for_quantization(path, Path(tmp) / "pre.onnx") if preprocess else Path(path)
        with _quiet_root_logger():
            extra = {} if op_types is None else {"op_types_to_quantize": list(op_types)}
            quantize_dynamic(str(src), str(out_path), per_channel=per_channel, weight_type=QuantType.QInt8, **extra)
    return Path(out_path)


class TensorCalibrationReader:
    """An ONNX Runtime ``CalibrationDataReader`` over a tensor of sample inputs.

    Args:
        input_name: the model input to feed.
        samples: float ``[N, ...]`` calibration inputs (N >= 1).
        batch_size: samples per calibration batch.
    """

    def __init__(self, input_name: str, samples: torch.Tensor | np.ndarray, batch_size: int = 64):
        arr = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise ValueError("the calibration set is empty: static quantization needs representative inputs")
        if not np.isfinite(arr).all():
            raise ValueError("the calibration set contains NaN or inf")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.input_name = input_name
        self.batches = [arr[i : i + batch_size].astype(np.float32) for i in range(0, arr.shape[0], batch_size)]
        self._iter: Iterator[np.ndarray] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self.batches)


CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")


def ort_quantize_static(
    path: str | Path,
    out_path: str | Path,
    calibration: torch.Tensor | np.ndarray,
    per_channel: bool = True,
    method: str = "minmax",
    batch_size: int = 64,
) -> Path:
    """INT8 static post-training quantization (QDQ format) with calibration.

    Activation ranges are collected by running ``calibration`` inputs through the
    model (``method``: ``"minmax"`` ranges, ``"entropy"`` (KL-optimal) or
    ``"percentile"`` clipping); weights are int8 (symmetric, per channel by default),
    activations uint8 (asymmetric): on x86 CPUs the u8 x s8 kernels are the fast ones,
    s8 x s8 falls back to much slower code.

    Raises:
        ValueError: an empty calibration set or an unknown method.
    """
    ort = _ort()
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    with tempfile.TemporaryDirectory() as tmp:
        pre = preprocess_for_quantization(path, Path(tmp) / "pre.onnx")
        input_name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        inner = TensorCalibrationReader(input_name, calibration, batch_size)

        class _Reader(CalibrationDataReader):  # ORT checks the base class
            def get_next(self):
                return inner.get_next()

            def rewind(self):
                inner.rewind()

        with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):  # calibration progress prints
            quantize_static(
                str(pre), str(out_path), _Reader(),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                  "percentile": CalibrationMethod.Percentile}[method],
                extra_options={"WeightSymmetric": True},
            )
    return Path(out_path)


# ---------------------------------------------------------------------------------------
# GPU engines
# ---------------------------------------------------------------------------------------


def available_providers() -> list[str]:
    """ONNX Runtime execution providers in this installation."""
    return list(_ort().get_available_providers())


def tensorrt_status() -> tuple[bool, str]:
    """``(usable, reason)``: whether a TensorRT path can run here, and why (not)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device: TensorRT compiles CUDA kernels and needs an NVIDIA GPU"
    if importlib.util.find_spec("torch_tensorrt") is not None:
        return True, "torch-tensorrt is installed"
    if "TensorrtExecutionProvider" in available_providers():
        return True, "ONNX Runtime has the TensorRT execution provider"
    return False, (
        "CUDA is present but neither torch-tensorrt nor onnxruntime-gpu with the TensorRT "
        "provider is installed (pip install torch-tensorrt, or onnxruntime-gpu + TensorRT libraries)"
    )


def gpu_providers() -> list[str]:
    """The GPU execution providers this ONNX Runtime offers, best first (may be empty)."""
    have = available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]


def compile_tensorrt(module: nn.Module, example: torch.Tensor, fp16: bool = True) -> nn.Module:
    """Compile ``module`` with torch-tensorrt for inputs shaped like ``example`` (on CUDA).

    Raises:
        RuntimeError: no CUDA device or torch-tensorrt missing (see :func:`tensorrt_status`).
    """
    if not torch.cuda.is_available() or importlib.util.find_spec("torch_tensorrt") is None:
        raise RuntimeError(f"TensorRT unavailable: {tensorrt_status()[1]}")
    import torch_tensorrt

    module = module.eval().cuda()
    precisions = {torch.float16, torch.float32} if fp16 else {torch.float32}
    return torch_tensorrt.compile(
        module, ir="dynamo", inputs=[example.cuda()], enabled_precisions=precisions,
    )
