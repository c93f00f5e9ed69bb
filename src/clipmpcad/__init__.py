"""ClipMPCAD: few-shot anomaly detection on a frozen CLIP with MADFF, M-Decoder and P-Prompts.

from clipmpcad import Predictor
predictor = Predictor.from_run("runs/bottle-4shot")
predictions = predictor.predict(["a.png", "b.png"])
"""

from .checkpoint import load_run
from .predict import Prediction, Predictor

__all__ = ["Prediction", "Predictor", "__version__", "load_run"]
__version__ = "0.1.0"
