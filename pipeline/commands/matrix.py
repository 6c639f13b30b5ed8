"""`pipeline matrix`: every trained run scored on every test store, as one train x test table."""

from __future__ import annotations

import click

from classify.config import DEVICES
from classify.matrix import PHASES, run_matrix
from pipeline.errors import local_path


class Several(click.Option):
    """A repeatable option that also takes several values after one flag (``--runs a b c``): the
    arguments that follow it, up to the next option, are its values too."""

    def add_to_parser(self, parser, ctx):
        result = super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is not None:
                take = option.process

                def process(value, state, take=take):
                    take(value, state)
                    while state.rargs and not state.rargs[0].startswith("-"):
                        take(state.rargs.pop(0), state)

                option.process = process
        return result


def many_values(values: tuple[str, ...]) -> list[str]:
    """Values given as repeated flags, each possibly holding several (space or comma separated)."""
    return [v for value in values for v in value.replace(",", " ").split()]


@click.command("matrix")
@click.option("--runs", cls=Several, multiple=True, required=True,
              help="Run folders (their best.pt) or checkpoints; several after one flag, or the flag repeated.")
@click.option("--features", cls=Several, multiple=True, required=True, help="Test feature stores; several, or the flag repeated.")
@click.option("--out", "out_dir", callback=local_path, type=click.Path(file_okay=False), required=True,
              help="Folder for cells/, matrix.parquet, matrix.md and matrix.png.")
@click.option("--bootstrap", "n_boot", type=int, default=200, show_default=True,
              help="Bootstrap replicates (speakers and attacks) of each cell's interval.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--phase", type=click.Choice(PHASES), default="eval", show_default=True,
              help="Trials each cell scores: 'eval' = the eval phase of stores with phases (ASVspoof 2021), every "
                   "trial of others; 'all' = every trial, all phases together. Each cell says which and how many.")
def command(runs, features, out_dir, n_boot, device, phase):
    """Score every run on every store (each with its own calibration), group runs that differ only
    by seed, and write the train x test matrix: rows = training setting, columns = test corpus,
    cells = mean EER over seeds, spread and a bootstrap interval, plus pooled and average columns.
    A run whose codec or SSL weights differ from a store's gets an empty cell saying why."""
    try:
        table = run_matrix(many_values(runs), many_values(features), out_dir, device=device, n_boot=n_boot,
                           log=click.echo, phase=phase)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {out_dir}/matrix.md, matrix.parquet, matrix.png ({len(table)} cells)")
