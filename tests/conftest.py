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


@pytest.fixture(scope="session")
def synthetic_benchmark(tmp_path_factory):
    """The generated benchmark (BMAD with and without masks, MVTec layout), written once per run."""
    from clipmpcad.data.synthetic import generate_benchmark

    return generate_benchmark(tmp_path_factory.mktemp("synthetic") / "data", seed=0)


@pytest.fixture(autouse=True)
def _prototype_cache(tmp_path_factory, monkeypatch):
    """Text prototypes cached per test session, never in the user's home."""
    monkeypatch.setenv("CLIPMPCAD_CACHE", str(tmp_path_factory.getbasetemp() / "prototype-cache"))
