"""ClipMPCAD: few-shot anomaly detection on a frozen CLIP with MADFF, M-Decoder and P-Prompts."""

__version__ = "0.1.0"
