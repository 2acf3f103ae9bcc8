import numpy as np
import pytest
import torch
import torch.nn as nn

from course_lib.compression.engines import (
    ExportMismatchError,
    OrtModule,
    TensorCalibrationReader,
    export_onnx,
    max_abs_difference,
    onnx_size_mb,
    ort_op_profile,
    ort_quantize_dynamic,
    ort_quantize_static,
    ort_session,
    tensorrt_status,
    verify_onnx,
)


@pytest.fixture(scope="module")
def exported(tiny_clip, tmp_path_factory):
    visual = tiny_clip[0].visual
    path = export_onnx(visual, torch.randn(2, 3, 32, 32), tmp_path_factory.mktemp("onnx") / "visual.onnx", "image", "embedding")
    return visual, path


def test_export_agrees_with_torch_at_any_batch(exported):
    visual, path = exported
    session = ort_session(path, "all", threads=1)
    inputs = [torch.randn(b, 3, 32, 32) for b in (1, 5, 64)]
    assert verify_onnx(visual, session, inputs, atol=1e-4) <= 1e-4
    assert OrtModule(session)(inputs[1]).shape == (5, 64)
    assert 1.5 < onnx_size_mb(path) < 4


def test_disagreeing_export_raises(exported):
    visual, path = exported
    session = ort_session(path, "basic")
    perturbed = torch.nn.Module()
    perturbed.forward = lambda x: visual(x) + 1e-2  # a model that is not what was exported
    with pytest.raises(ExportMismatchError, match="disagrees"):
        verify_onnx(perturbed, session, [torch.randn(3, 3, 32, 32)])
    wrong_shape = torch.nn.Module()
    wrong_shape.forward = lambda x: visual(x)[:, :10]
    with pytest.raises(ExportMismatchError, match="shape"):
        max_abs_difference(wrong_shape, session, [torch.randn(2, 3, 32, 32)])
    with pytest.raises(ValueError):
        max_abs_difference(visual, session, [])


def test_ort_quantization_dynamic_and_static(exported, tmp_path):
    visual, path = exported
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        ref = visual(x)
    dyn = OrtModule(ort_session(ort_quantize_dynamic(path, tmp_path / "dyn.onnx"), threads=1))
    static = OrtModule(ort_session(ort_quantize_static(path, tmp_path / "static.onnx", torch.randn(64, 3, 32, 32), batch_size=32), threads=1))
    for q in (dyn, static):
        assert torch.cosine_similarity(q(x), ref).min() > 0.95
    assert onnx_size_mb(tmp_path / "dyn.onnx") < 0.5 * onnx_size_mb(path)
    assert onnx_size_mb(tmp_path / "static.onnx") < 0.5 * onnx_size_mb(path)


def test_empty_or_bad_calibration_set_raises(exported, tmp_path):
    _, path = exported
    with pytest.raises(ValueError, match="empty"):
        ort_quantize_static(path, tmp_path / "s.onnx", torch.empty(0, 3, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        TensorCalibrationReader("image", np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="method"):
        ort_quantize_static(path, tmp_path / "s.onnx", torch.randn(4, 3, 32, 32), method="magic")
    reader = TensorCalibrationReader("image", torch.randn(5, 3, 32, 32), batch_size=2)
    assert [b["image"].shape[0] for b in iter(reader.get_next, None)] == [2, 2, 1]
    reader.rewind()
    assert reader.get_next()["image"].shape == (2, 3, 32, 32)


def test_session_options_are_checked(exported, tmp_path):
    _, path = exported
    with pytest.raises(ValueError, match="graph_optimization"):
        ort_session(path, "max")
    with pytest.raises(FileNotFoundError):
        ort_session(tmp_path / "missing.onnx")
    with pytest.raises(ValueError):
        export_onnx(nn.Linear(2, 2), torch.empty(0, 2), tmp_path / "x.onnx")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only expectation")
def test_tensorrt_status_explains_why_not_on_cpu():
    usable, reason = tensorrt_status()
    assert usable is False and "GPU" in reason


class _DataDependent(nn.Module):
    """Tracing records only the branch taken for the example: a classic silent export bug."""

    def forward(self, x):
        return x * 2 if float(x.sum()) > 0 else x * 3


def test_a_trace_that_only_fits_its_example_is_caught(tmp_path):
    module = _DataDependent()
    path = export_onnx(module, torch.ones(2, 4), tmp_path / "branch.onnx")  # consistent on the example
    with pytest.raises(ExportMismatchError):
        verify_onnx(module, ort_session(path), [-torch.ones(3, 4)])


def _op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_dynamic_quantization_op_types(exported, tmp_path):
    _, path = exported
    default = ort_quantize_dynamic(path, tmp_path / "all.onnx")
    matrix_only = ort_quantize_dynamic(path, tmp_path / "mm.onnx", op_types=("MatMul", "Gemm"))
    assert "ConvInteger" in _op_types(default)
    ops = _op_types(matrix_only)
    assert "Conv" in ops and "ConvInteger" not in ops
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat"}


def test_ort_op_profile_splits_kernel_time_by_op(exported, tmp_path):
    _, path = exported
    x = torch.randn(4, 3, 32, 32)
    fp32 = ort_op_profile(path, x, runs=3)
    assert "Conv" in fp32 and ({"MatMul", "Gemm"} & set(fp32))
    assert all(ms >= 0 for ms in fp32.values()) and list(fp32.values()) == sorted(fp32.values(), reverse=True)
    int8 = ort_op_profile(ort_quantize_dynamic(path, tmp_path / "q.onnx"), x, runs=3)
    assert "ConvInteger" in int8 and "Conv" not in int8
    with pytest.raises(ValueError, match="runs"):
        ort_op_profile(path, x, runs=0)
    runs = ort_op_profile(path, x, runs=3, per_run=True)
    assert isinstance(runs, list) and len(runs) == 3 and all("Conv" in r for r in runs)
