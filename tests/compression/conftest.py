"""Shared fixtures for the compression tests: the bundled tiny CLIP, loaded once.

The tensors here are tiny, so intra-op parallelism only adds thread wake-ups (and, on a
shared machine, waits for descheduled threads): the tests run torch on one thread and
restore the setting afterwards.
"""

import pytest
import torch

from course_lib.compression.benchmarking import torch_threads
from course_lib.models import load_clip


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_clip():
    model, _, tokenizer = load_clip("tiny")
    return model, tokenizer


@pytest.fixture()
def images():
    """A fixed batch of 6 normalised-looking inputs [6, 3, 32, 32]."""
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
