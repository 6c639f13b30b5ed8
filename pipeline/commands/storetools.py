"""`pipeline inspect`, `pipeline verify` and `pipeline export`: look into, check and export a feature store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from pipeline.errors import local_path, one_line
from store.export import EXPORTERS
from store.inspect import format_report, inspect_store
from store.verify import verify_store

_STORE = click.argument("store", metavar="STORE")


@click.command("inspect")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@one_line("inspect", "check the path and run the same command again")
def inspect_command(store: str, as_json: bool) -> None:
    """Summarise the feature store STORE (a path or fsspec URL): utterances by split, label and
    system; audio seconds and frames; bytes on disk per array; codec, weights and provenance;
    failures. An unfinished store reports its extraction's progress instead."""
    info = inspect_store(store)
    click.echo(json.dumps(info, indent=2, default=str) if as_json else format_report(info))


@click.command("verify")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--repair", is_flag=True, help="Re-extract the utterances whose frames damaged chunks hold, from their "
              "audio, and rewrite those chunks in place (needs the audio and the codec).")
def verify_command(store: str, as_json: bool, repair: bool) -> None:
    """Check the integrity of the finished feature store STORE: format and attributes, offsets,
    utterance table and failures, array shapes, weights sha256, and that every chunk of every array
    is there and decodes. Damaged chunks are mapped to the utterances and work units whose frames
    they hold. One line per problem; exit status 0 when everything is OK, 1 otherwise."""
    if repair:
        _repair(store)
        return
    import extract.codec  # noqa: F401, PLC0415 - registers the codec's codebook reader, which the weights check uses
    report = verify_store(store)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
    sys.exit(0 if report.ok else 1)


@one_line("the repair", "fix that and run the same command again")
def _repair(store: str) -> None:
    from extract.repair import repair_store  # the codec stack: only for a repair  # noqa: PLC0415

    result = repair_store(store, log=click.echo)
    if result.rewritten:
        click.echo(f"repaired {store}: rewrote {', '.join(result.rewritten)} with {len(result.utterances)} re-extracted "
                   f"utterance(s) (work unit(s) {', '.join(map(str, result.units))}); {result.compared_frames} intact "
                   "frames of those units matched the store")
    click.echo(result.report.format())
    sys.exit(0 if result.report.ok else 1)


@click.command("export")
@_STORE
@click.option("--format", "fmt", type=click.Choice(sorted(EXPORTERS)), required=True, help="Output format.")
@click.option("--out", callback=local_path, type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output file (replaced if it exists).")
@click.option("--split", default=None, help="Export only this split (default: every split).")
@click.option("--latent", is_flag=True, help="Also export the continuous latent (float16 [frames, dim]).")
@click.option("--view", default=None, help="Export the store's augmented view NAME instead of the clean features "
              "(same utterance ids; `pipeline inspect` lists the views).")
@one_line("export")  # StoreReadError, ExportError (ValueErrors); a full disk
def export_command(store: str, fmt: str, out: Path, split: str | None, latent: bool, view: str | None) -> None:
    """Export the dense per-quantizer embeddings (float32 [frames, n_q, dim], C_q[code_q]) of the
    ok utterances of STORE, with offsets, utterance ids, the table's columns, the codebooks and
    the codec weights' provenance. Dense data is 256 times the size of the codes: about 307 KB per
    audio second at 8 levels."""
    bar = tqdm(unit="frame", unit_scale=True, desc="export", file=sys.stderr, dynamic_ncols=True, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = EXPORTERS[fmt](store, out, split=split, latent=latent, progress=progress, view=view)
    finally:
        bar.close()
    click.echo(
        f"wrote {result.out}: {result.utterances} utterances, {result.frames} frames, embeddings "
        f"[{result.frames}, {result.n_q}, {result.dim}] float32{', latent' if result.latent else ''} ({result.bytes / 1e6:.1f} MB)"
        + (f"; view {view}" if view else "")
    )
