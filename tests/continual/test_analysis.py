"""Forgetting measurements against independent formulas."""

import numpy as np
import pytest
import scipy.linalg
import torch

from course_lib.continual.analysis import (
    hidden_representation, linear_cka, output_bias, principal_subspace, subspace_overlap, weight_drift,
)
from course_lib.continual.models import mlp


def _hsic_cka(x, y):
    """Reference: CKA via centred Gram matrices, HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_cka_matches_the_gram_matrix_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 9, generator=g)
    y[:, :6] += 2 * x
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x.double().numpy(), y.double().numpy()), rel=1e-9)


def test_cka_invariances():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(50, 8, generator=g)) < 0.4
    with pytest.raises(ValueError, match="different inputs"):
        linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="constant"):
        linear_cka(x, torch.ones(50, 3))


def test_subspace_overlap_equals_mean_cos2_of_principal_angles():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(60, 12, generator=g), torch.randn(70, 12, generator=g)
    y[:, :3] *= 10  # some shared dominant directions
    x[:, :3] *= 10
    k = 4
    angles = scipy.linalg.subspace_angles(principal_subspace(x, k).numpy(), principal_subspace(y, k).numpy())
    assert subspace_overlap(x, y, k) == pytest.approx(float(np.mean(np.cos(angles) ** 2)), rel=1e-9)
    assert subspace_overlap(x, x, k) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k must"):
        subspace_overlap(x, y, 0)
    with pytest.raises(ValueError, match="feature dimension"):
        subspace_overlap(x, y[:, :5])


def test_weight_drift_is_relative_frobenius_change():
    before = {"w": torch.ones(2, 2), "steps": torch.tensor(3)}
    after = {"w": torch.ones(2, 2) * 1.5, "steps": torch.tensor(4)}
    assert weight_drift(before, after) == {"w": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="shapes"):
        weight_drift(before, {"w": torch.ones(3)})


def test_output_bias_statistics():
    torch.manual_seed(0)
    model = mlp(4, 3, hidden=5)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 100.0]))
    stats = output_bias(model, torch.rand(20, 4))
    np.testing.assert_allclose(stats.prediction_share, [0, 0, 1])
    np.testing.assert_allclose(stats.bias, [0, 0, 100])
    np.testing.assert_allclose(stats.weight_norm, model.head.weight.detach().norm(dim=1).numpy(), rtol=1e-6)
    only_two = output_bias(model, torch.rand(20, 4), classes=[0, 1])
    assert only_two.prediction_share.sum() == pytest.approx(1.0) and len(only_two.bias) == 2
    assert model.training  # the mode is restored
    assert hidden_representation(model, torch.rand(3, 4)).shape == (3, 5)
    with pytest.raises(TypeError):
        output_bias(torch.nn.Linear(2, 2), torch.rand(2, 2))


def test_within_task_accuracy_lets_only_the_told_units_compete():
    import pytest
    from torch import nn

    from course_lib.continual.analysis import within_task_accuracy

    net = nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 0.0], [0.0, 5.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2]])
    y = torch.tensor([0, 1, 1])
    # among all four units the big units 2/3 win every time; told units [0, 1]: 2 of 3 right
    assert within_task_accuracy(net, [0, 1], x, y) == pytest.approx(2 / 3)
    assert within_task_accuracy(net, [2, 3], x, y + 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="not among"):
        within_task_accuracy(net, [2, 3], x, y)
    with pytest.raises(ValueError, match="at least one"):
        within_task_accuracy(net, [], x, y)
