"""One exception hierarchy. Every user-facing failure is an ``ArrowDiffError`` whose message names the
bad value, what is allowed, and how to fix it; the CLI prints it as one line and exits non-zero."""


class ArrowDiffError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(ArrowDiffError, ValueError):
    """A configuration or argument value is out of range."""


class WeightFormatError(ArrowDiffError):
    """A weight file or model directory is missing, corrupt, truncated or inconsistent."""


class ModalityError(ArrowDiffError, ValueError):
    """A modality the model does not support was requested."""


class StorageError(ArrowDiffError):
    """The memory store (ArrowStorage) cannot do what was asked: unknown id, damaged or foreign files,
    a store written with another embedding size or by a newer format version."""
