"""Benchmarks: targets are global output units; scenarios differ only in the units."""

import pytest
import torch

from course_lib.continual.models import ProgressiveNet, build_model
from course_lib.continual.scenarios import split_shapeworld_scenario


def test_split_digits_units_and_targets(digits_scenarios):
    task, dom, cls = (digits_scenarios[k] for k in ("task", "domain", "class"))
    assert (task.num_outputs, dom.num_outputs, cls.num_outputs) == (10, 2, 10)
    for t in range(5):
        assert task.units(t) == [2 * t, 2 * t + 1]
        assert dom.units(t) == [0, 1]
        assert set(task.experiences[t].y_train.unique().tolist()) == {2 * t, 2 * t + 1}
        assert set(dom.experiences[t].y_train.unique().tolist()) == {0, 1}
        assert set(cls.experiences[t].y_train.unique().tolist()) == {2 * t, 2 * t + 1}  # the digits
        assert torch.equal(task.experiences[t].x_train, cls.experiences[t].x_train)
    assert cls.units(0, seen=3) == list(range(6))
    assert task.experiences[2].classes == ("4", "5")
    assert sum(len(e.y_train) for e in cls.experiences) + sum(len(e.y_test) for e in cls.experiences) == 1797


def test_split_shapeworld_by_shape_and_colour():
    sc = split_shapeworld_scenario("class", by="shape", n_train=20, n_test=10)
    assert sc.num_outputs == 6 and sc.input_shape == (3, 32, 32) and len(sc) == 3
    assert sc.experiences[1].classes == ("triangle", "cross")
    assert set(sc.experiences[2].y_train.tolist()) <= {4, 5}
    x = sc.experiences[0].x_train
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    dom = split_shapeworld_scenario("domain", by="color", groups=[("red", "green"), ("orange", "pink")], n_train=8, n_test=8)
    assert dom.num_outputs == 2 and dom.experiences[1].classes == ("orange", "pink")


@pytest.mark.parametrize("kwargs", [
    {"kind": "online"}, {"by": "size"}, {"groups": [("circle", "blob")]}, {"groups": [("circle",)]},
    {"groups": [("circle", "square"), ("square", "ring")]}, {"n_train": 0},
])
def test_split_shapeworld_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        split_shapeworld_scenario(**{"n_train": 4, "n_test": 4, **kwargs})


def test_default_models():
    assert build_model((64,), 10)(torch.rand(3, 64)).shape == (3, 10)
    assert build_model((3, 32, 32), 6)(torch.rand(2, 3, 32, 32)).shape == (2, 6)
    with pytest.raises(ValueError):
        build_model((5, 5), 2)


def test_progressive_net_columns_and_laterals():
    net = ProgressiveNet(6, 4, num_layers=3)
    assert net.add_column(2) == 0 and net.add_column(3) == 1
    assert net(torch.rand(5, 6), column=1).shape == (5, 3)
    assert all(not p.requires_grad for p in net.columns[0].parameters())
    assert all(p.requires_grad for p in net.columns[1].parameters())
    assert all(a.bias is None for layer in net.laterals[1] for a in layer)
    assert [len(layer) for layer in net.laterals[1]] == [1, 1, 1]  # layers 1, 2 and the output
    with pytest.raises(IndexError, match="column 2"):
        net(torch.rand(1, 6), column=2)
    with pytest.raises(ValueError):
        net.add_column(0)
