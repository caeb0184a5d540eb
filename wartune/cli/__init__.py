"""The `wartune` command line: parses, validates, and calls the layers below.

Any `WartuneError` (a problem the user can fix) becomes one line on stderr and exit
status 2, as do command-line usage errors and a failing disk or folder (`OSError`: full,
read-only, removed); nothing else is caught.
"""

from __future__ import annotations

import sys

from typer import Abort, Exit

try:  # typer >= 0.2x vendors its own click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on stock click
    from click.exceptions import ClickException  # type: ignore[assignment]

from wartune.cli import search_commands  # noqa: F401 - registers the commands that run searches

# isort: split
from wartune.cli import result_commands  # noqa: F401 - then those that read results
from wartune.cli.app import app
from wartune.cli.options import err_console
from wartune.errors import WartuneError


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors with exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except WartuneError as err:
        err_console.print(f"wartune: error: {err}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except ClickException as err:  # usage errors: unknown option, bad type, missing value
        if err.format_message():  # empty when no arguments were given and help was shown
            err_console.print(f"wartune: error: {err.format_message()}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:  # the disk or folder failed us (full, read-only, gone): say which, in one line
        where = f" {str(err.filename)!r}" if err.filename else ""
        err_console.print(f"wartune: error: cannot use{where}: {err.strerror or err}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except Abort:
        err_console.print("wartune: aborted")
        sys.exit(130)
    except Exit as err:
        sys.exit(err.exit_code)

