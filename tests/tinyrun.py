"""Helpers for tests that train tiny runs (imported by name; not a conftest)."""

from __future__ import annotations


def tiny_run_config(dataset: str, root, category: str, **sections):
    """A RunConfig on the tiny random backbone at 64 px, merged with per-test sections."""
    from clipmpcad.config import RunConfig

    tree = {
        "data": {"dataset": dataset, "root": str(root), "category": category, "shot": 2},
        "backbone": {"model": "clipmpcad-tiny", "weights": "random", "image_size": 64},
        "train": {"epochs": 2, "batch_size": 8},
        "device": "cpu",
    }
    for section, values in sections.items():
        tree[section] = {**tree.get(section, {}), **values} if isinstance(values, dict) else values
    return RunConfig.from_dict(tree)
