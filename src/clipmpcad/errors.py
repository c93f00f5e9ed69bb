"""Errors raised for bad user input: each names what, where, and how to fix it (STYLE §11).

The CLI prints a ClipMPCADError as one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class ClipMPCADError(Exception):
    """A problem with the user's input, configuration or files."""


class ConfigError(ClipMPCADError):
    """An invalid configuration value or option combination."""


class DataError(ClipMPCADError):
    """A dataset folder, image, mask or list file that cannot be used."""


class CheckpointError(ClipMPCADError):
    """Backbone weights or a run's checkpoint that cannot be found or loaded."""


class PromptError(ClipMPCADError):
    """A prompt set that is missing, malformed, or fails lint."""


def load_failure(error: Exception) -> str:
    """One line on why torch could not load a file. torch's weights-only refusals run to a page
    that suggests loading with weights_only=False (running code from the file): not advice to pass on."""
    text = str(error)
    if isinstance(error, (EOFError, KeyError)) or "PytorchStreamReader" in text:  # torch's words for these
        return "not a complete file saved by torch: damaged, cut short, or a file of another kind"
    if "WeightsUnpickler error:" in text:
        detail = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0].split())
        return f"not a file of plain tensors ({detail}); weights are loaded without running code from the file"
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__
