"""A durable log of labelled feedback in SQLite.

Each item gets a strictly increasing integer id (``AUTOINCREMENT``: never reused). The
database runs in WAL mode with ``synchronous=FULL``: :meth:`FeedbackStore.add` returns
only after the commit reached the disk, so an item whose id was returned survives a
crash (``kill -9``, power loss of the process). Writers are serialised by SQLite, so ids
become visible in increasing order and "everything up to id ``w``" is a valid
watermark for what a model has learned.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    x BLOB NOT NULL,
    label INTEGER NOT NULL,
    predicted INTEGER,
    model_version INTEGER,
    created REAL NOT NULL
)
"""


class FeedbackStore:
    """Append-only feedback log.

    Args:
        path: the SQLite file (created with its parent folder if missing).
        dim: length of every feature vector (float32).
    """

    def __init__(self, path: str | Path, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.path, self.dim = Path(path), int(dim)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        """One connection per thread (SQLite connections are not shared across threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def add(self, x: np.ndarray, label: int, predicted: int | None = None, model_version: int | None = None) -> int:
        """Store one item durably; return its id (only after the commit is on disk)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape != (self.dim,):
            raise ValueError(f"expected a feature vector of shape ({self.dim},), got {x.shape}")
        return self.add_many(x[None], [label], None if predicted is None else [predicted], model_version)[0]

    def add_many(self, x: np.ndarray, labels, predicted=None, model_version: int | None = None) -> list[int]:
        """Store ``n`` items in one transaction (all or none); return their ids, in order,
        only after the commit is on disk.

        Args:
            x: float32 ``[n, dim]``.
            labels: ``n`` integer labels.
            predicted: optional ``n`` labels the served model predicted before learning them.
            model_version: the version that made those predictions.
        """
        x = np.asarray(x, dtype=np.float32)
        labels = [int(v) for v in labels]
        if x.ndim != 2 or x.shape[1] != self.dim or len(x) != len(labels) or len(x) == 0:
            raise ValueError(f"expected x [n >= 1, {self.dim}] and n labels, got {x.shape} and {len(labels)} labels")
        preds = [None] * len(x) if predicted is None else [int(v) for v in predicted]
        now = time.time()
        rows = [(x[i].tobytes(), labels[i], preds[i], model_version, now) for i in range(len(x))]
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [int(conn.execute(
                    "INSERT INTO feedback (x, label, predicted, model_version, created) VALUES (?, ?, ?, ?, ?)", row
                ).lastrowid) for row in rows]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return ids

    def fetch_after(self, watermark: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Items with ``id > watermark`` in id order: ``(ids int64 [n], x float32 [n, dim], labels int64 [n])``."""
        sql = "SELECT id, x, label FROM feedback WHERE id > ? ORDER BY id"
        args: tuple = (int(watermark),)
        if limit is not None:
            sql += " LIMIT ?"
            args += (int(limit),)
        rows = self._conn().execute(sql, args).fetchall()
        return self._unpack(rows)

    def fetch(self, ids: list[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The items with the given ids (those that exist), in id order."""
        ids = [int(i) for i in ids]
        if not ids:
            return self._unpack([])
        rows = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            q = f"SELECT id, x, label FROM feedback WHERE id IN ({','.join('?' * len(part))}) ORDER BY id"
            rows += self._conn().execute(q, part).fetchall()
        rows.sort(key=lambda r: r[0])
        return self._unpack(rows)

    def _unpack(self, rows: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        x = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim).copy()
        y = np.array([r[2] for r in rows], dtype=np.int64)
        return ids, x, y

    def count(self, after: int = 0) -> int:
        """Number of items with ``id > after``."""
        return int(self._conn().execute("SELECT COUNT(*) FROM feedback WHERE id > ?", (int(after),)).fetchone()[0])

    def max_id(self) -> int:
        """The largest id stored (0 when empty)."""
        return int(self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM feedback").fetchone()[0])

    def oldest_age(self, after: int = 0) -> float | None:
        """Seconds since the oldest item with ``id > after`` was stored (``None`` if there is none)."""
        row = self._conn().execute(
            "SELECT created FROM feedback WHERE id > ? ORDER BY id LIMIT 1", (int(after),)
        ).fetchone()
        return None if row is None else time.time() - float(row[0])

    def recent_outcomes(self, n: int) -> list[bool]:
        """For the last ``n`` items that were predicted before being stored: was the prediction right?"""
        rows = self._conn().execute(
            "SELECT predicted = label FROM feedback WHERE predicted IS NOT NULL ORDER BY id DESC LIMIT ?", (int(n),)
        ).fetchall()
        return [bool(r[0]) for r in reversed(rows)]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
