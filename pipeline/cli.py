"""The `pipeline` command: one group, one module per command under pipeline/commands/.

Commands are imported when they are used, not when the group is built, so that `pipeline doctor`
(and any command that does not need the codec) still runs in an environment where torch,
torchaudio or encodec cannot load; a command that cannot be imported for that reason prints the
one-paragraph diagnosis of :func:`pipeline.environment.codec_stack_problem` instead of a traceback.
"""

from __future__ import annotations

import importlib

import click

from pipeline.environment import codec_stack_problem

COMMANDS: dict[str, str] = {
    "extract": "pipeline.commands.extract:command",
    "inspect": "pipeline.commands.storetools:inspect_command",
    "verify": "pipeline.commands.storetools:verify_command",
    "export": "pipeline.commands.storetools:export_command",
    "train": "pipeline.commands.train:command",
    "evaluate": "pipeline.commands.evaluate:command",
    "sweep": "pipeline.commands.sweep:command",
    "matrix": "pipeline.commands.matrix:command",
    "score": "pipeline.commands.score:command",
    "serve": "pipeline.commands.serve:command",
    "export-model": "pipeline.commands.export_model:command",
    "metrics": "pipeline.commands.metrics:command",
    "demo": "pipeline.commands.demo:command",
    "doctor": "pipeline.commands.doctor:command",
}
"""Command name -> ``module:attribute`` of its click command."""


def _unavailable(name: str, problem: str) -> click.Command:
    """A stand-in for a command whose module cannot be imported here: it prints ``problem``."""

    def fail(**_: object) -> None:
        raise click.ClickException(problem)

    return click.Command(name, callback=fail, help=f"(unavailable here: {problem})", short_help="(unavailable here: run `pipeline doctor`)",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


def load_command(name: str) -> click.Command:
    """Import command ``name``; when the codec stack cannot load, a stand-in that says why."""
    module, attribute = COMMANDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except Exception:  # noqa: BLE001 - re-raised unless the environment explains it
        problem = codec_stack_problem()
        if problem is None:
            raise
        return _unavailable(name, problem)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rvq-antispoof")
def main() -> None:
    """Speech anti-spoofing from the quantizer hierarchy of a frozen EnCodec.

    Data flows one way: extract (audio -> feature store) -> train / evaluate / sweep (store -> scores);
    score judges new audio files with a trained model.
    `pipeline doctor` says whether this environment can run it.
    """
