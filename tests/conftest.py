"""Shared fixtures: the tiny random-init backbone (built once) and a seeded generator."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from clipmpcad.backbone import Backbone, load_backbone
from clipmpcad.config import BackboneConfig

TINY = BackboneConfig(model="clipmpcad-tiny", weights="random", image_size=64)


@pytest.fixture(autouse=True)
def _quiet_open_clip(caplog):
    caplog.set_level(logging.ERROR)


@pytest.fixture(scope="session")
def tiny_backbone() -> Backbone:
    return load_backbone(TINY)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
