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
