"""Shared fixtures of the multimodal tests: the tiny CLIP and a small ShapeWorld batch."""

import pytest
import torch

from course_lib.data import ShapeWorldConfig, generate
from course_lib.models import load_clip


@pytest.fixture(scope="session")
def tiny_clip():
    model, _, tokenizer = load_clip("tiny")
    return model, tokenizer


@pytest.fixture(scope="session")
def scenes():
    return generate(48, seed=5, config=ShapeWorldConfig(max_objects=3))


@pytest.fixture
def unit_pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=1)
    y = torch.nn.functional.normalize(x + 0.5 * torch.randn(12, 8, generator=g), dim=1)
    return x, y
