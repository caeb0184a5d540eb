"""The one family of errors a user can cause.

The CLI turns any `WartuneError` into a single line on stderr and exit status 2;
everything else is a bug and keeps its traceback.
"""


class WartuneError(Exception):
    """A problem with the user's input: names the field and the allowed values."""


class ConfigError(WartuneError):
    """A search space, flag or training config that fails validation."""


class DataError(WartuneError):
    """A dataset that is unknown or cannot be loaded from the named folder."""


class ModelNameError(WartuneError):
    """A model name that matches no registered family."""
