"""Shared fixtures for the compression tests: the bundled tiny CLIP, loaded once."""

import pytest
import torch

from course_lib.models import load_clip


@pytest.fixture(scope="session")
def tiny_clip():
    model, _, tokenizer = load_clip("tiny")
    return model, tokenizer


@pytest.fixture()
def images():
    """A fixed batch of 6 normalised-looking inputs [6, 3, 32, 32]."""
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
