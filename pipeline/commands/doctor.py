"""`pipeline doctor`: what this environment is, and whether extraction can run in it."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import click

from pipeline.environment import format_report, report


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def command(as_json: bool) -> None:
    """Python and package versions; whether torchaudio loads with this torch (and what to run when
    not); whether the installed packages are the tested lock's; CUDA devices and memory; where the
    pretrained EnCodec checkpoint is looked for and whether it is there; free disk in this folder.
    Exit status 1 when extraction cannot run here."""
    checks, can_extract = report()
    if as_json:
        click.echo(json.dumps({"checks": [asdict(c) for c in checks], "can_extract": can_extract}, indent=2))
    else:
        click.echo(format_report(checks, can_extract))
    sys.exit(0 if can_extract else 1)
