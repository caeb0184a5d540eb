"""The one family of errors a user can cause.

The CLI turns any `WartuneError` into a single line on stderr and exit status 2;
everything else is a bug and keeps its traceback. A warning (`warn`) is one line too.
"""

import sys


class WartuneError(Exception):
    """A problem with the user's input: names the field and the allowed values."""


class ConfigError(WartuneError):
    """A search space, flag or training config that fails validation."""


class DataError(WartuneError):
    """A dataset that is unknown or cannot be loaded from the named folder."""


class ModelNameError(WartuneError):
    """A model name that matches no registered family."""


def warn(text: str) -> None:
    """One line on stderr, `wartune: warning: ...`: what a user should know but need not fix
    (MLflow paused, a model not logged, a folder upgraded). Never raises, never stops a search."""
    print(f"wartune: warning: {text}", file=sys.stderr, flush=True)
