"""Graded tests of task 3.3: ProgressiveNet.

Parameter names are the learner's choice, so the exact forward test assigns weights *by
shape*: every [h, d] matrix gets M, every [h, h] matrix A, every [o, h] matrix B_o, every
bias of size h gets b and of size o gets c_o (in_dim 5, hidden 7 and output widths 3, 4, 2
are chosen so that no two roles share a shape). A matrix that concatenates several
adapters ([h, m*h] or [o, m*h]) gets m copies side by side, so a fused implementation is
graded like separate Linears. With shared weights the contract's formula still depends on
which columns and layers feed which, so wiring mistakes change the output. Gradients are
computed in the worker by a trusted helper; everything else goes through the module's
handle.

Tolerances: float32 outputs are compared with the float32 reference to 1e-5 absolute
(products of width 5 or 7 with weights below 1 and a few hundred operations, so both
sides are within ~1e-6; float64 work passes, float16 fails). After ``.double()`` the
network must compute in float64: outputs for inputs with digits beyond float32 are
compared with the float64 reference to 64 * eps * 100 (1.4e-12). Outputs of old columns
after adding a column must be bit-identical. Forward also runs on PyTorch's "meta" device
(standing in for a GPU): nothing may be created on the CPU.
"""

import pytest
import torch

from course_lib.grading.testing import (
    as_tensor,
    assert_close,
    assert_not_mutated,
    assert_on_input_device,
    assert_precision,
    expect_error,
)

TASK = "ch3_continual/task3_progressive"
D, H = 5, 7
OUTS = [3, 4, 2]


def _count(k, out, layers):
    return D * H + H + (layers - 1) * (H * H + H) + out * H + out + k * ((layers - 1) * H * H + out * H)


def _roles(seed):
    g = torch.Generator().manual_seed(seed)
    roles = {"M": torch.randn(H, D, generator=g) * 0.6, "A": torch.randn(H, H, generator=g) * 0.4,
             "b": torch.randn(H, generator=g) * 0.3}
    for o in OUTS:
        roles[("B", o)] = torch.randn(o, H, generator=g) * 0.5
        roles[("c", o)] = torch.randn(o, generator=g) * 0.3
    return roles


def _assign(impl, net, roles):
    info = impl.helper("param_info", net)
    state = {}
    for name, shape, _ in info:
        if len(shape) == 2 and shape == [H, D]:
            value = roles["M"]
        elif len(shape) == 2 and shape[1] % H == 0 and shape[0] == H:
            value = roles["A"].repeat(1, shape[1] // H)
        elif len(shape) == 2 and shape[1] % H == 0 and shape[0] in OUTS:
            value = roles[("B", shape[0])].repeat(1, shape[1] // H)
        elif len(shape) == 1 and shape[0] == H:
            value = roles["b"]
        elif len(shape) == 1 and shape[0] in OUTS:
            value = roles[("c", shape[0])]
        else:
            raise AssertionError(
                f"parameter {name!r} has shape {shape}, which has no role in the contract (in_dim={D}, hidden={H}, "
                f"outputs {OUTS}): W_0 is [{H}, {D}], W_l and U_l are [{H}, {H}], W_out and U_out are [out, {H}]")
        state[name] = value
    result = impl.helper("load_state_dict", net, state, False)
    assert not result["unexpected"], f"unexpected parameters {result['unexpected']}"


def _reference(x, column, layers, roles):
    relu = torch.relu
    acts = []
    for k in range(column + 1):
        hs = [relu(x @ roles["M"].T + roles["b"])]
        for l in range(1, layers):
            z = hs[l - 1] @ roles["A"].T + roles["b"]
            for j in range(k):
                z = z + acts[j][l - 1] @ roles["A"].T
            hs.append(relu(z))
        acts.append(hs)
    o = OUTS[column]
    y = acts[column][-1] @ roles[("B", o)].T + roles[("c", o)]
    for j in range(column):
        y = y + acts[j][-1] @ roles[("B", o)].T
    return y


def _x(n, seed):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _net(impl, columns, layers=2):
    net = impl.ProgressiveNet(D, H, num_layers=layers)
    for k in range(columns):
        index = net.add_column(OUTS[k])
        assert index == k, f"add_column should return the new column's index {k}, got {index!r}"
    return net


def _net_with_roles(impl, columns, seed, layers=2):
    """A net whose weights are set by shape (see the module docstring), and those weights."""
    net, roles = _net(impl, columns, layers), _roles(seed)
    _assign(impl, net, roles)
    return net, roles


def _params(impl, net):
    return {name: (shape, grad) for name, shape, grad in impl.helper("param_info", net)}


@pytest.mark.points(1)
def test_add_column_returns_the_index(impl):
    _net(impl, 3)


@pytest.mark.points(2)
def test_column_zero_is_a_plain_mlp(impl):
    net = _net(impl, 1)
    total = sum(torch.Size(s).numel() for s, _ in _params(impl, net).values())
    assert total == _count(0, OUTS[0], 2), (
        f"column 0 (in {D}, hidden {H}, 2 layers, out {OUTS[0]}) should have {_count(0, OUTS[0], 2)} parameters "
        f"(W_0, W_1, W_out with biases), has {total}")
    roles = _roles(1)
    _assign(impl, net, roles)
    x = _x(6, 2)
    assert_close(as_tensor(net(x, 0), "forward(x, 0)", shape=(6, OUTS[0])), _reference(x, 0, 2, roles),
                 "output of column 0", atol=1e-5, show=False,
                 hint="h_0 = relu(W_0 x), h_1 = relu(W_1 h_0), y = W_out h_1 (no relu on the output)")


@pytest.mark.points(3)
def test_lateral_connections(impl):
    net, roles = _net_with_roles(impl, 3, seed=3)
    x = _x(5, 4)
    for column in range(3):
        assert_close(as_tensor(net(x, column), f"forward(x, {column})", shape=(5, OUTS[column])),
                     _reference(x, column, 2, roles), f"output of column {column}", atol=1e-5, show=False,
                     hint="layer l of column k adds U_l^{k,j} h_{l-1}^{(j)} from EVERY earlier column j, inside "
                          "the relu; the output adds U_out^{k,j} h_{L-1}^{(j)}")


@pytest.mark.points(1)
def test_three_hidden_layers(impl):
    net = _net(impl, 2, layers=3)
    total = sum(torch.Size(s).numel() for s, _ in _params(impl, net).values())
    expected = _count(0, OUTS[0], 3) + _count(1, OUTS[1], 3)
    assert total == expected, f"two columns with num_layers=3 should have {expected} parameters, have {total}"
    roles = _roles(5)
    _assign(impl, net, roles)
    x = _x(4, 6)
    for column in range(2):
        assert_close(net(x, column), _reference(x, column, 3, roles), f"output of column {column} (num_layers=3)",
                     atol=1e-5, show=False)


@pytest.mark.points(2)
def test_parameter_count_per_column(impl):
    net = impl.ProgressiveNet(D, H, num_layers=2)
    seen = 0
    for k, out in enumerate(OUTS):
        net.add_column(out)
        total = sum(torch.Size(s).numel() for s, _ in _params(impl, net).values())
        assert total - seen == _count(k, out, 2), (
            f"column {k} should add {_count(k, out, 2)} parameters (its W with biases, plus bias-free lateral "
            f"adapters U from each of the {k} earlier columns into layers 1..L-1 and the output), added {total - seen}")
        seen = total


@pytest.mark.points(2)
def test_earlier_columns_are_frozen(impl):
    net = impl.ProgressiveNet(D, H, num_layers=2)
    before: set[str] = set()
    for k, out in enumerate(OUTS):
        net.add_column(out)
        params = _params(impl, net)
        missing = before - set(params)
        assert not missing, f"parameters {sorted(missing)[:4]} disappeared when column {k} was added (keep names stable)"
        still_trainable = sorted(n for n in before if params[n][1])
        assert not still_trainable, (
            f"after add_column, every earlier parameter must have requires_grad=False; still trainable: "
            f"{still_trainable[:4]}")
        frozen_new = sorted(n for n in set(params) - before if not params[n][1])
        assert not frozen_new, f"the new column's parameters must be trainable; frozen: {frozen_new[:4]}"
        before = set(params)


@pytest.mark.points(1)
def test_old_columns_keep_their_outputs(impl):
    net = _net(impl, 1)
    x = _x(4, 7)
    y0 = as_tensor(net(x, 0), "forward(x, 0)")
    net.add_column(OUTS[1])
    y1 = as_tensor(net(x, 1), "forward(x, 1)")
    assert_close(net(x, 0), y0, "column 0's output after adding column 1", atol=0, rtol=0,
                 hint="adding a column must not change earlier columns")
    net.add_column(OUTS[2])
    assert_close(net(x, 1), y1, "column 1's output after adding column 2", atol=0, rtol=0)


@pytest.mark.points(1)
def test_gradients_reach_the_new_column(impl):
    net = _net(impl, 3)
    out = impl.helper("method_with_param_grads", net, "__call__", [_x(6, 8), 2], {})
    assert "error" not in out, f"forward(x, 2) must be differentiable: {out.get('error')}"
    trainable = {n for n, (_, g) in _params(impl, net).items() if g}
    no_grad = sorted(n for n in trainable if out["grads"].get(n) is None or float(out["grads"][n].abs().sum()) == 0)
    assert not no_grad, f"no gradient reaches the new column's parameters {no_grad[:4]}: are they all used in forward?"


@pytest.mark.points(1)
def test_output_shapes_and_bad_columns(impl):
    net = _net(impl, 2)
    x = _x(3, 9)
    for column in range(2):
        as_tensor(net(x, column), f"forward(x, {column})", shape=(3, OUTS[column]))
    expect_error(net, x, 2, errors=("IndexError", "ValueError"), what="forward(x, 2) with 2 columns")


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    net, roles = _net_with_roles(impl, 2, seed=11)
    x = _x(3, 10)
    out = net(x, 1)
    assert_not_mutated(impl, "ProgressiveNet.forward")
    assert_close(out, _reference(x, 1, 2, roles), "output of column 1", atol=1e-5, show=False)



@pytest.mark.points(1)
def test_one_hidden_layer(impl):
    net = _net(impl, 3, layers=1)
    total = sum(torch.Size(s).numel() for s, _ in _params(impl, net).values())
    expected = sum(_count(k, OUTS[k], 1) for k in range(3))
    assert total == expected, (
        f"three columns with num_layers=1 should have {expected} parameters (W_0 and W_out per column, lateral "
        f"adapters into the output only), have {total}")
    roles = _roles(14)
    _assign(impl, net, roles)
    x = _x(5, 15)
    for column in range(3):
        assert_close(net(x, column), _reference(x, column, 1, roles), f"output of column {column} (num_layers=1)",
                     atol=1e-5, show=False, hint="with L = 1: h_0 = relu(W_0 x), y = W_out h_0 + sum_j U_out h_0^(j)")


@pytest.mark.points(1)
def test_bad_sizes_are_rejected(impl):
    net = impl.ProgressiveNet(D, H, num_layers=2)  # valid use first
    net.add_column(3)
    for args, kwargs, what in [((0, H), {}, "in_dim=0"), ((D, 0), {}, "hidden_dim=0"),
                               ((D, H), {"num_layers": 0}, "num_layers=0")]:
        expect_error(impl.ProgressiveNet, *args, **kwargs, what=f"ProgressiveNet({what})")
    expect_error(net.add_column, 0, what="add_column(out_dim=0)")


@pytest.mark.points(1)
def test_float64_and_device(impl):
    net, roles = _net_with_roles(impl, 3, seed=16)
    net = net.call_method("double")
    x = _x(4, 17).double() + 1e-9 * torch.randn(4, D, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    roles64 = {k: v.double() for k, v in roles.items()}
    for column in range(3):
        assert_precision(net(x, column), _reference(x, column, 2, roles64),
                         f"output of column {column} after .double(), for float64 inputs", torch.float64, 100)
    assert_on_input_device(impl, "ProgressiveNet.forward", net, [x, 2])
