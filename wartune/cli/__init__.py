"""The `wartune` command line: parses, validates, and calls the layers below.

Any `WartuneError` (a problem the user can fix) becomes one line on stderr and exit
status 2, as do command-line usage errors and a failing disk or folder (`OSError`: full,
read-only, removed); nothing else is caught. Ctrl-C, SIGTERM and SIGHUP stop a command at a
safe point (`wartune.interrupts`): it says what finished and how to continue, and exits with
the shell's status for the signal (130, 143, 129).
"""

from __future__ import annotations

import os
import shlex
import signal
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
from wartune.interrupts import SearchInterrupted, on_stop_signals, received, signal_name

RESUMABLE = ("search", "calibrate", "transfer", "compare")  # the commands `--resume` continues


def _say(text: str) -> None:
    err_console.print(f"wartune: {text}", highlight=False, markup=False, soft_wrap=True)


def resume_command(args: list[str]) -> str | None:
    """The command line that continues an interrupted one: the same, with `--resume` (and
    without `--overwrite`); None for a command that has nothing to resume."""
    if not args or args[0] not in RESUMABLE:
        return None
    kept = [a for a in args if a != "--overwrite"]
    return shlex.join(["wartune", *kept, *([] if "--resume" in kept else ["--resume"])])


def _progress(err: SearchInterrupted) -> str:
    """`3 of 8 trials finished, 21 epochs recorded in runs/NAME` from the folder's tables."""
    from wartune.results.store import (
        EPOCH_SCHEMA,
        EPOCHS_FILE,
        TRIAL_SCHEMA,
        TRIALS_FILE,
        read_rows,
    )

    if err.folder is None:
        return "every epoch recorded is kept"
    trials = read_rows(err.folder / TRIALS_FILE, TRIAL_SCHEMA)
    epochs = len(read_rows(err.folder / EPOCHS_FILE, EPOCH_SCHEMA))
    finished = sum(t["status"] == "finished" for t in trials)
    of = f" of {err.total}" if err.total else ""
    return f"{finished}{of} trials finished, {epochs} epochs recorded in {err.folder}"


def _interrupted(args: list[str], signum: int, what: str) -> None:
    """The statement an interrupted command ends with, then its exit status (128 + signal)."""
    command = args[0] if args else "wartune"
    _say(f"{command} interrupted by {signal_name(signum)}: {what}")
    if (again := resume_command(args)) is not None:
        _say(f"continue it with: {again}")
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors with exit status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    _working_folder_importable()
    with on_stop_signals():
        _main(args)


def _working_folder_importable() -> None:
    """The working folder's modules importable, as `python -m` makes them, by this process and by
    the Ray workers it starts (they inherit PYTHONPATH): a user's `--model my_nets:build-2`."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *paths])


def _stopped_at_once(args: list[str]) -> str:
    """What an interrupt outside Ray's loop leaves: a command that resumes keeps its recorded epochs."""
    return "stopped at once; every epoch recorded before is kept" if resume_command(args) is not None else "stopped at once"


def _main(args: list[str]) -> None:
    try:
        code = app(args=args, standalone_mode=False)
        if code == 130:  # typer's answer to a KeyboardInterrupt: a stop signal outside Ray's loop, or a second one
            _interrupted(args, received() or signal.SIGINT, _stopped_at_once(args))
        if isinstance(code, int) and code:
            sys.exit(code)
    except SearchInterrupted as err:
        _interrupted(args, err.signum, _progress(err))
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
    except (Abort, KeyboardInterrupt):  # a stop signal outside Ray's loop, or a second one: stopped at once
        _interrupted(args, received() or signal.SIGINT, _stopped_at_once(args))
    except Exit as err:
        sys.exit(err.exit_code)

