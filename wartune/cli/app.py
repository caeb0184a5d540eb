"""The typer application objects (commands register themselves on import)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Tune adversarial training: λ searches, WAR and stability metrics on Ray Tune.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root() -> None:
    """Tune adversarial training: λ searches, WAR and stability metrics on Ray Tune."""


zeta_app = typer.Typer(help="The ζ registry: thin-net calibrations that WAR transfers.", no_args_is_help=True)
app.add_typer(zeta_app, name="zeta")

