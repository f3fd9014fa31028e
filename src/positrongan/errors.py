"""User-facing errors: the CLI prints their message (one line, naming the key or file) and exits 2."""


class PositronganError(Exception):
    """Base of every error the CLI reports without a traceback."""


class ConfigError(PositronganError, ValueError):
    """A configuration problem: names the key and what is allowed."""


class ArtifactError(PositronganError, RuntimeError):
    """A missing, empty or corrupt input artifact: names the file."""
