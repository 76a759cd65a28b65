"""Stage 4, cli: the `mailhost` command; each sub-command is a thin typer layer over one stage."""
