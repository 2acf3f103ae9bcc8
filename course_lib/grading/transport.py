"""Data-only messages between the trusted test process and a submission worker.

Nothing that crosses the process boundary is ever unpickled. A message is a small JSON
header followed by raw byte buffers::

    [4 bytes: header length, big endian][header: UTF-8 JSON][buffer 0][buffer 1]...

The JSON tree holds plain values (None, bool, int, float incl. nan/inf, str, list) and
tagged objects (one-key dicts whose key starts with ``$``):

* ``{"$t": [i, dtype, shape]}``  a torch tensor stored in buffer ``i`` (CPU, contiguous)
* ``{"$nd": [i, dtype, shape]}`` a numpy array
* ``{"$tuple": [...]}``, ``{"$set": [...]}``, ``{"$dict": [[key, value], ...]}``
* ``{"$dtype": "float32"}``        a torch dtype
* ``{"$handle": [id, type_name]}`` an object that stays in the worker (see sandbox.py)
* ``{"$bytes": i}``               raw bytes (e.g. a serialised FAISS index)
* ``{"$faiss": i}``               a FAISS index serialised with ``faiss.serialize_index``
* ``{"$fn": [name, params]}``     a trusted callable built from data by the worker

Decoding only ever builds these types, so a hostile worker can send wrong values but
never code. Sizes and nesting are bounded.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _TORCH_DTYPES.items()}
_NUMPY_KINDS = "biufc?"


class TransportError(Exception):
    """A message could not be encoded or decoded (malformed, too big, unsupported type)."""


@dataclass(frozen=True)
class Handle:
    """Reference to an object living in the worker (decoded form of ``$handle``)."""

    id: int
    type_name: str


@dataclass(frozen=True)
class FnSpec:
    """A callable the worker builds from trusted code, e.g. ``FnSpec("table", {...})``."""

    name: str
    params: Any


@dataclass(frozen=True)
class FaissBlob:
    """A FAISS index serialised by the worker; ``load()`` deserialises it (no pickle)."""

    data: bytes

    def load(self):
        import faiss

        return faiss.deserialize_index(np.frombuffer(self.data, dtype=np.uint8).copy())


class _Encoder:
    def __init__(self, handle_for=None):
        self.buffers: list[bytes] = []
        self.handle_for = handle_for  # callable(obj) -> Handle for non-data objects

    def _buf(self, data: bytes) -> int:
        self.buffers.append(data)
        return len(self.buffers) - 1

    def enc(self, obj: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise TransportError("value nested too deeply")
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return _enc_float(float(obj))
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj)
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind not in _NUMPY_KINDS:
                raise TransportError(f"cannot send numpy arrays of dtype {obj.dtype}")
            arr = np.ascontiguousarray(obj)
            return {"$nd": [self._buf(arr.tobytes()), arr.dtype.str, list(arr.shape)]}
        if isinstance(obj, np.generic):
            return self.enc(obj.item(), depth + 1)
        if isinstance(obj, torch.dtype):
            return {"$dtype": _dtype_name(obj)}
        if isinstance(obj, torch.Size):
            return {"$tuple": [int(s) for s in obj]}
        if isinstance(obj, tuple):
            return {"$tuple": [self.enc(v, depth + 1) for v in obj]}
        if isinstance(obj, list):
            return [self.enc(v, depth + 1) for v in obj]
        if isinstance(obj, (set, frozenset)):
            return {"$set": [self.enc(v, depth + 1) for v in obj]}
        if isinstance(obj, dict):
            return {"$dict": [[self.enc(k, depth + 1), self.enc(v, depth + 1)] for k, v in obj.items()]}
        if isinstance(obj, (bytes, bytearray)):
            return {"$bytes": self._buf(bytes(obj))}
        if isinstance(obj, Handle):
            return {"$handle": [obj.id, obj.type_name]}
        if isinstance(obj, FnSpec):
            return {"$fn": [obj.name, self.enc(obj.params, depth + 1)]}
        if isinstance(obj, FaissBlob):
            return {"$faiss": self._buf(obj.data)}
        blob = _faiss_bytes(obj)
        if blob is not None:
            return {"$faiss": self._buf(blob)}
        if self.handle_for is not None:
            handle = self.handle_for(obj)
            return {"$handle": [handle.id, handle.type_name]}
        raise TransportError(f"cannot send a value of type {type(obj).__name__}")

    def _tensor(self, t: torch.Tensor) -> dict:
        if t.layout != torch.strided:
            raise TransportError(f"cannot send a tensor with layout {t.layout}")
        if t.dtype not in _DTYPE_NAMES:
            raise TransportError(f"cannot send a tensor of dtype {t.dtype}")
        t = t.detach().to("cpu").contiguous()
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        data = raw.numpy().tobytes() if t.numel() else b""
        return {"$t": [self._buf(data), _DTYPE_NAMES[t.dtype], list(t.shape)]}


def _enc_float(x: float) -> Any:
    if math.isfinite(x):
        return x
    return {"$f": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def _dtype_name(dtype: torch.dtype) -> str:
    if dtype not in _DTYPE_NAMES:
        raise TransportError(f"unsupported dtype {dtype}")
    return _DTYPE_NAMES[dtype]


def _faiss_bytes(obj: Any) -> bytes | None:
    import sys

    faiss = sys.modules.get("faiss")
    if faiss is None or not isinstance(obj, getattr(faiss, "Index", ())):
        return None
    return bytes(faiss.serialize_index(obj).tobytes())


def map_leaves(value: Any, leaf) -> Any:
    """Rebuild lists, tuples and dict values with ``leaf(x)`` applied to everything else."""
    if isinstance(value, list):
        return [map_leaves(v, leaf) for v in value]
    if isinstance(value, tuple):
        return tuple(map_leaves(v, leaf) for v in value)
    if isinstance(value, dict):
        return {k: map_leaves(v, leaf) for k, v in value.items()}
    return leaf(value)


def encode(obj: Any, handle_for=None) -> bytes:
    """Encode a data value into one message (see the module docstring)."""
    encoder = _Encoder(handle_for)
    tree = encoder.enc(obj)
    sizes = [len(b) for b in encoder.buffers]
    header = json.dumps({"tree": tree, "sizes": sizes}, allow_nan=False).encode()
    total = 4 + len(header) + sum(sizes)
    if total > MAX_MESSAGE_BYTES:
        raise TransportError(f"message of {total} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    return b"".join([struct.pack(">I", len(header)), header, *encoder.buffers])


class _Decoder:
    def __init__(self, buffers: list[memoryview]):
        self.buffers = buffers

    def buf(self, i: Any) -> memoryview:
        if not isinstance(i, int) or not 0 <= i < len(self.buffers):
            raise TransportError("bad buffer reference")
        return self.buffers[i]

    def dec(self, node: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise TransportError("value nested too deeply")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.dec(v, depth + 1) for v in node]
        if not isinstance(node, dict) or len(node) != 1:
            raise TransportError("malformed message")
        (tag, val), = node.items()
        if tag == "$t":
            return self._tensor(val)
        if tag == "$nd":
            i, dtype, shape = val
            dt = np.dtype(dtype)
            if dt.kind not in _NUMPY_KINDS:
                raise TransportError("unsupported numpy dtype")
            data = self.buf(i)
            shape = _shape(shape)
            if len(data) != dt.itemsize * math.prod(shape):
                raise TransportError("numpy buffer size mismatch")
            return np.frombuffer(data, dtype=dt).reshape(shape).copy()
        if tag == "$f":
            if val not in ("nan", "inf", "-inf"):
                raise TransportError("bad float")
            return float(val)
        if tag == "$tuple":
            return tuple(self.dec(v, depth + 1) for v in _list(val))
        if tag == "$set":
            return {self.dec(v, depth + 1) for v in _list(val)}
        if tag == "$dict":
            out = {}
            for pair in _list(val):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise TransportError("malformed dict")
                out[self.dec(pair[0], depth + 1)] = self.dec(pair[1], depth + 1)
            return out
        if tag == "$dtype":
            if val not in _TORCH_DTYPES:
                raise TransportError("unsupported dtype")
            return _TORCH_DTYPES[val]
        if tag == "$handle":
            hid, type_name = val
            if not isinstance(hid, int) or not isinstance(type_name, str):
                raise TransportError("malformed handle")
            return Handle(hid, type_name[:200])
        if tag == "$bytes":
            return bytes(self.buf(val))
        if tag == "$faiss":
            return FaissBlob(bytes(self.buf(val)))
        if tag == "$fn":
            name, params = val
            if not isinstance(name, str):
                raise TransportError("malformed function spec")
            return FnSpec(name, self.dec(params, depth + 1))
        raise TransportError(f"unknown tag {tag!r}")

    def _tensor(self, val: Any) -> torch.Tensor:
        i, dtype, shape = val
        if dtype not in _TORCH_DTYPES:
            raise TransportError("unsupported tensor dtype")
        dt = _TORCH_DTYPES[dtype]
        shape = _shape(shape)
        data = self.buf(i)
        itemsize = torch.empty((), dtype=dt).element_size()
        if len(data) != itemsize * math.prod(shape):
            raise TransportError("tensor buffer size mismatch")
        if len(data) == 0:
            return torch.empty(shape, dtype=dt)
        raw_dt = torch.int16 if dt == torch.bfloat16 else dt
        t = torch.frombuffer(bytearray(data), dtype=raw_dt).reshape(shape)
        return t.view(torch.bfloat16) if dt == torch.bfloat16 else t


def _list(val: Any) -> list:
    if not isinstance(val, list):
        raise TransportError("malformed message")
    return val


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise TransportError("bad shape")
    if len(shape) > 32 or math.prod(shape) > MAX_MESSAGE_BYTES:
        raise TransportError("bad shape")
    return tuple(shape)


def decode(data: bytes) -> Any:
    """Decode a message produced by :func:`encode`; raises TransportError if malformed."""
    try:
        if len(data) < 4:
            raise TransportError("truncated message")
        (hlen,) = struct.unpack(">I", data[:4])
        if 4 + hlen > len(data):
            raise TransportError("truncated message")
        header = json.loads(bytes(data[4 : 4 + hlen]))
        if not isinstance(header, dict) or set(header) != {"tree", "sizes"}:
            raise TransportError("malformed header")
        sizes = header["sizes"]
        if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
            raise TransportError("malformed sizes")
        view = memoryview(data)
        offset = 4 + hlen
        buffers = []
        for size in sizes:
            buffers.append(view[offset : offset + size])
            offset += size
        if offset != len(data):
            raise TransportError("message size mismatch")
        return _Decoder(buffers).dec(header["tree"])
    except TransportError:
        raise
    except (ValueError, TypeError, KeyError, RecursionError, struct.error) as exc:
        raise TransportError(f"malformed message ({type(exc).__name__})") from None


# --- framing over a stream socket -------------------------------------------------------


def send_frame(sock, payload: bytes) -> None:
    """Send one length-prefixed frame."""
    sock.sendall(struct.pack(">Q", len(payload)) + payload)


def recv_frame(sock, limit: int = MAX_MESSAGE_BYTES, deadline: float | None = None) -> bytes:
    """Receive one frame; raises EOFError when the peer closed the connection.

    ``deadline`` (a ``time.monotonic()`` value) bounds the whole frame, not each read;
    ``socket.timeout`` is raised when it passes.
    """
    head = _recv_exact(sock, 8, deadline)
    (size,) = struct.unpack(">Q", head)
    if size > limit:
        raise TransportError(f"frame of {size} bytes exceeds the limit of {limit}")
    return _recv_exact(sock, size, deadline)


def _recv_exact(sock, n: int, deadline: float | None = None) -> bytes:
    import socket
    import time

    chunks = bytearray()
    while len(chunks) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline passed")
            sock.settimeout(left)
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks += chunk
    return bytes(chunks)
