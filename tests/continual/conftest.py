"""Shared fixtures of the continual-learning tests."""

import pytest
import torch

from course_lib.continual.scenarios import split_digits_scenario


@pytest.fixture(scope="session")
def digits_scenarios():
    """Split-Digits in the three scenarios (built once)."""
    return {kind: split_digits_scenario(kind) for kind in ("task", "domain", "class")}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The networks here are tiny: one intra-op thread is faster and avoids spinning
    threads on a busy machine. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
