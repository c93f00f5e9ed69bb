"""ClipMPCAD: few-shot anomaly detection on a frozen CLIP with MADFF, M-Decoder and P-Prompts.

from clipmpcad import Predictor
predictor = Predictor.from_run("runs/bottle-4shot")
predictions = predictor.predict(["a.png", "b.png"])

The names below are imported on first use, so that the command line starts (and answers --help)
without loading torch and OpenCLIP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import load_run
    from .predict import Prediction, Predictor, Unreadable

__all__ = ["Prediction", "Predictor", "Unreadable", "__version__", "load_run"]
__version__ = "0.1.0"

_LAZY = {"load_run": "checkpoint", "Prediction": "predict", "Predictor": "predict", "Unreadable": "predict"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'clipmpcad' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
