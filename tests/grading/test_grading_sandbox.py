"""Unit tests of the isolation layer: data-only transport and sandboxed workers."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.grading.proxy import RemoteModule
from course_lib.grading.sandbox import Limits, Sandbox, SubmissionError, bwrap_command, sandbox_status
from course_lib.grading.transport import FnSpec, Handle, TransportError, decode, encode


# --- transport ---------------------------------------------------------------------------
def test_transport_round_trips_data():
    value = {
        "f32": torch.randn(3, 4), "bf16": torch.randn(5).to(torch.bfloat16), "i64": torch.arange(6).reshape(2, 3),
        "bool": torch.tensor([True, False]), "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5, dtype=torch.float64),
        "strided": torch.arange(12.0).reshape(3, 4).T, "np": np.arange(4, dtype=np.int16),
        "nums": [1, 2.5, float("nan"), float("inf"), -float("inf"), True, None, "text"],
        "tuple": (1, (2, 3)), "set": {1, 2, 3}, 7: "int key", ("a", 1): "tuple key",
        "dtype": torch.float16, "size": torch.Size([2, 3]), "handle": Handle(4, "Thing"),
        "fn": FnSpec("table", {1: 2.0}), "np_scalar": np.float32(1.5),
    }
    back = decode(encode(value))
    for key in ("f32", "bf16", "i64", "bool", "empty", "scalar", "strided"):
        assert back[key].dtype == value[key].dtype and torch.equal(back[key], value[key]), key
    assert np.array_equal(back["np"], value["np"]) and back["np"].dtype == np.int16
    assert back["nums"][:2] == [1, 2.5] and math.isnan(back["nums"][2]) and back["nums"][3:] == [
        math.inf, -math.inf, True, None, "text"]
    assert back["tuple"] == (1, (2, 3)) and back["set"] == {1, 2, 3}
    assert back[7] == "int key" and back[("a", 1)] == "tuple key"
    assert back["dtype"] is torch.float16 and back["size"] == (2, 3)
    assert back["handle"] == Handle(4, "Thing") and back["fn"] == FnSpec("table", {1: 2.0})
    assert back["np_scalar"] == 1.5


def test_transport_refuses_objects_and_malformed_messages():
    with pytest.raises(TransportError):
        encode(object())
    with pytest.raises(TransportError):
        encode(lambda: 0)
    good = encode({"x": torch.ones(3)})
    header_len = struct.unpack(">I", good[:4])[0]
    for bad in (b"", good[:3], good[:-1], good + b"x", struct.pack(">I", 10 ** 9) + good[4:],
                good[:4] + good[4:4 + header_len].replace(b'"$t"', b'"$x"') + good[4 + header_len:],
                struct.pack(">I", 9) + b'{"a": 1}]' ):
        with pytest.raises(TransportError):
            decode(bad)
    deep = encode([[[[1]]]])
    assert decode(deep) == [[[[1]]]]
    nested = b"[" * 5000 + b"]" * 5000
    with pytest.raises(TransportError):
        decode(struct.pack(">I", len(b'{"tree": ' + nested + b', "sizes": []}')) + b'{"tree": ' + nested + b', "sizes": []}')


# --- sandboxed workers -------------------------------------------------------------------
MODULE = '''
import os, sys, time
import torch
print("hello at import")
COUNT = 0
def add(a, b):
    return a + b
def scale_in_place(x):
    x.mul_(2)
    return x.sum()
def fail():
    raise ValueError("bad value")
def hang():
    while True:
        pass
def die():
    os._exit(3)
def leave():
    sys.exit(0)
def shout():
    sys.stdout.write("x" * 3_000_000)
    return "done"
def whoami():
    return os.getuid(), os.environ.get("COURSE_IMPL"), os.getcwd()
def write(path):
    with open(path, "w") as fh:
        fh.write("x")
def bump():
    global COUNT
    COUNT += 1
    return COUNT
def make_object():
    return object()
class Box:
    def __init__(self, n):
        self.n = n
    def __len__(self):
        return self.n
    def double(self):
        return 2 * self.n
    @property
    def half(self):
        return self.n / 2
'''


@pytest.fixture
def remote(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(MODULE)
    impl = RemoteModule(Sandbox(path, "module.py", call_timeout=4, options={"threads": 1}))
    yield impl
    impl.close()


def test_calls_results_and_remote_objects(remote):
    assert torch.equal(remote.add(torch.ones(2), 1), torch.full((2,), 2.0))
    box = remote.Box(6)
    assert len(box) == 6 and box.double() == 12 and box.half == 3.0 and box.type_name == "Box"
    assert remote.make_object().type_name == "object"  # non-data results stay in the worker
    assert "hello at import" in remote.output_tail()


def test_mutation_is_reported(remote):
    x = torch.ones(3)
    remote.scale_in_place(x)
    assert remote.last_mutated == ["x"] and torch.equal(x, torch.ones(3))  # the caller's copy is untouched
    remote.add(x, 1)
    assert remote.last_mutated == []


def test_exceptions_hangs_exits_and_restarts(remote):
    with pytest.raises(SubmissionError) as err:
        remote.fail()
    assert err.value.is_a("ValueError") and "bad value" in str(err.value) and "line" in str(err.value)
    with pytest.raises(SubmissionError) as err:
        remote.leave()
    assert err.value.is_a("SystemExit") and "sys.exit" in str(err.value)
    assert remote.bump() == 1 and remote.bump() == 2  # state lives while the worker lives
    with pytest.raises(SubmissionError) as err:
        remote.die()
    assert err.value.kind == "died" and "status 3" in str(err.value)
    assert remote.bump() == 1  # a fresh worker
    box = remote.Box(2)
    with pytest.raises(SubmissionError) as err:
        remote.hang()
    assert err.value.kind == "timeout"
    with pytest.raises(SubmissionError) as err:
        len(box)  # the object died with its worker
    assert err.value.kind == "died"
    assert remote.add(1, 2) == 3


def test_output_flood_is_drained_and_capped(remote):
    assert remote.shout() == "done"
    assert remote.add(1, 1) == 2
    assert len(remote.output_tail()) <= 4096


def test_worker_is_isolated(remote, tmp_path):
    uid, impl_env, cwd = remote.whoami()
    assert impl_env is None and cwd != os.getcwd()
    if remote.isolation != "bwrap":
        pytest.skip(f"no bubblewrap sandbox here: {sandbox_status()[1]}")
    assert uid == 65534 and cwd == "/tmp"
    target = tmp_path / "outside.txt"
    target.write_text("trusted")
    with pytest.raises(SubmissionError) as err:
        remote.write(str(target))  # the folder does not exist inside the sandbox
    assert err.value.is_a("OSError") and target.read_text() == "trusted"


def test_sandbox_command_hides_the_course_and_the_host():
    cmd = bwrap_command("bwrap", Limits(), 5)
    assert {"--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--clearenv"} <= set(cmd)
    bound = [cmd[i + 2] for i, a in enumerate(cmd) if a in ("--ro-bind", "--bind")]
    assert "--bind" not in cmd  # nothing is writable but the private /tmp
    repo = Path(__file__).resolve().parents[2]
    for b in map(Path, bound):
        assert not repo.is_relative_to(b), f"{b} would expose the course folder"
        assert not b.is_relative_to(repo) or b.is_relative_to(repo / ".venv"), b
    assert "/etc" not in bound and "/home" not in bound and "/root" not in bound


@pytest.mark.parametrize("source,phrase", [
    ("raise RuntimeError('no')", "RuntimeError: no"),
    ("import sys\nsys.exit(0)", "sys.exit"),
    ("import os\nos._exit(0)", "while importing"),
    ("while True:\n    pass", "did not finish importing"),
    ("def f(:\n    pass", "SyntaxError"),
])
def test_import_failures_fail_every_call_fast(tmp_path, source, phrase):
    path = tmp_path / "broken.py"
    path.write_text(source)
    impl = RemoteModule(Sandbox(path, "broken.py", call_timeout=3, options={"threads": 1}))
    try:
        for _ in range(3):
            with pytest.raises(SubmissionError) as err:
                impl.anything()
            assert err.value.kind == "import" and phrase in str(err.value), str(err.value)
    finally:
        impl.close()


def test_missing_file_and_missing_function(tmp_path):
    impl = RemoteModule(Sandbox(tmp_path / "nope.py", "nope.py", call_timeout=3))
    with pytest.raises(SubmissionError) as err:
        impl.f()
    assert err.value.kind == "missing" and "has no file nope.py" in str(err.value)
    path = tmp_path / "empty.py"
    path.write_text("X = 1\n")
    impl = RemoteModule(Sandbox(path, "empty.py", call_timeout=3))
    try:
        with pytest.raises(SubmissionError) as err:
            impl.continual_metrics()
        assert "no function or class named 'continual_metrics'" in str(err.value)
    finally:
        impl.close()
