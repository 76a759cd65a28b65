"""The `mailhost` command: render, verify, lab.  Sub-commands live beside their code."""

from __future__ import annotations

import importlib
import warnings

import typer
from cryptography.utils import CryptographyDeprecationWarning

# dnspython (2.9) imports DSA types that cryptography (>= 47) marks deprecated: eight warnings before any
# output of ours.  Only that module's DSA warning is silenced; any other warning still shows.
warnings.filterwarnings("ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning,
                        module=r"dns\.dnssecalgs\.dsa")

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts as written: "[secret]" is a word here, not rich markup
    help="jira-mailhost: outgoing mail for Jira that arrives.",
)


@app.callback()
def _root() -> None:
    """Keeps `mailhost` a group of commands even when only one is registered."""


def _register() -> None:
    """Each part adds its own commands; a part that is missing must not break the others."""
    from mailhost.cli import render as cli_render
    from mailhost.cli import status as cli_status

    cli_render.register(app)
    cli_status.register(app)
    try:
        cli_verify = importlib.import_module("mailhost.cli.verify")
    except ImportError:
        pass
    else:
        cli_verify.register(app)
        importlib.import_module("mailhost.cli.reports").register(app)
        importlib.import_module("mailhost.cli.canary").register(app)
    try:
        lab_cli = importlib.import_module("mailhost.lab.cli")
    except ImportError:
        pass
    else:
        app.add_typer(lab_cli.lab_app, name="lab")


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
