"""The `pipeline` command: one group, one module per command under pipeline/commands/."""

from __future__ import annotations

import click

from pipeline.commands import demo, evaluate, extract, metrics, storetools, sweep, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rvq-antispoof")
def main() -> None:
    """Speech anti-spoofing from the quantizer hierarchy of a frozen EnCodec.

    Data flows one way: extract (audio -> feature store) -> train / evaluate / sweep (store -> scores).
    """


for command in (
    extract.command,
    storetools.inspect_command,
    storetools.verify_command,
    storetools.export_command,
    train.command,
    evaluate.command,
    sweep.command,
    metrics.command,
    demo.command,
):
    main.add_command(command)
