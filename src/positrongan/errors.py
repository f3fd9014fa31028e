"""User-facing errors: the CLI prints their message (one line, naming the key or file) and exits 2."""

import re


class PositronganError(Exception):
    """Base of every error the CLI reports without a traceback."""


class ConfigError(PositronganError, ValueError):
    """A configuration problem: names the key and what is allowed."""


class ArtifactError(PositronganError, RuntimeError):
    """A missing, empty or corrupt input artifact: names the file."""


class OutputError(PositronganError):
    """An output that cannot be written (read-only folder, a folder in its place, a full disk):
    names the path and what to do."""


class Terminated(BaseException):
    """SIGTERM arrived (a SLURM cancel or time limit): unwinds like KeyboardInterrupt, so every
    atomic write in progress removes its temporary file."""


# Library messages relayed inside ours sometimes advise loading the file unsafely
# (torch: "Re-running torch.load with weights_only set to False will likely succeed";
# numpy: "... when allow_pickle=False"). A file that needs that may run code: never suggest it.
_UNSAFE = re.compile(
    r"weights_only\W*(set to|=)\W*False|allow_pickle\W*(set to|=)\W*(True|False)|add_safe_globals|safe_globals", re.I
)


def safe_message(text: str) -> str:
    """``text`` without any library advice to load a file unsafely.

    A relayed message that mentions unpickling options is replaced, from its first such
    sentence on, by a plain statement that the file holds pickled Python objects.
    """
    if not _UNSAFE.search(text):
        return text
    cut = min((m.start() for m in _UNSAFE.finditer(text)), default=len(text))
    # Back up to the start of the relayed library message (after "(" of "(<library message>)").
    start = text.rfind("(", 0, cut)
    head = text[:start] if start >= 0 else text[:cut]
    return (
        head.rstrip(" :(") + " (it holds pickled Python objects, which are never loaded: they can run code; "
        "regenerate the file with this package)"
    )
