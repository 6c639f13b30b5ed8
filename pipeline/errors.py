"""One mapping of the project's errors to one line and an exit status, shared by every command.

Bad input is a ValueError everywhere in the project (ConfigError for settings, nested ones included;
CheckpointError, DataError, StoreReadError, DatasetError, WeightsError, ScoreFileError, ...), a busy
folder a LeaseHeld, a taken-over one a LeaseLost, and the machine's refusals (a full disk, a quota,
permissions) an OSError. :func:`one_line` turns each into a `click.ClickException` (exit status 1)
whose message is the error's own line; an OSError's line also says what to do next
(`common.oserrors.describe`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from common.lease import LeaseHeld, LeaseLost
from common.oserrors import describe

F = TypeVar("F", bound=Callable[..., Any])

EXPECTED: tuple[type[BaseException], ...] = (ValueError, LeaseHeld, LeaseLost)
"""The project's error types that mean bad input or a folder in use (see the module docstring)."""


def message(err: BaseException, doing: str, resume: str) -> str | None:
    """The one line for ``err`` (None when it is not one of the project's errors)."""
    if isinstance(err, EXPECTED):
        return str(err)
    if isinstance(err, OSError):
        return describe(err, doing, resume)
    return None


def one_line(doing: str, resume: str | Callable[..., str] = "fix that and run the same command again",
             also: tuple[type[BaseException], ...] = ()) -> Callable[[F], F]:
    """Decorate a command's callback: the errors of :data:`EXPECTED` (and ``also``, the command's own
    such as StoreError) become one line; an OSError's line names what failed (``doing``: "training")
    and what to do (``resume``, or ``resume(**the callback's keyword arguments)``)."""

    def wrap(callback: F) -> F:
        @functools.wraps(callback)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except click.ClickException:
                raise
            except also as err:
                raise click.ClickException(str(err)) from None
            except (*EXPECTED, OSError) as err:
                then = resume(**kwargs) if callable(resume) else resume
                raise click.ClickException(message(err, doing, then)) from None

        return run  # type: ignore[return-value]

    return wrap


def local_path(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback for the options that name a local file or folder (runs, reports, bundles):
    an fsspec URL there would silently become a local folder named ``s3:``; refuse it in one line.
    Feature stores (``--features``, extract's ``--out``) are the options that take URLs."""
    # click's Path type has already made "s3://b/run" into Path("s3:/b/run")
    if value is not None and re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(value)) and not str(value).startswith("file:"):
        raise click.BadParameter(f"{value}: must be a local path (or a mounted shared file system); only feature "
                                 "stores may be fsspec URLs (s3://, gs://, ...)", ctx=ctx, param=param)
    return value
