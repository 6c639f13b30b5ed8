"""`pipeline extract --views FILE`: augmented views of a store's utterances, extracted as the clean audio.

A view (`extract.augment`) is extracted by the extraction driver (`extract.driver.add_stream`) with
the store's own back-ends, whose audio source is :class:`ViewAudio` instead of the files: the codec
back-end (`extract.codec_stream`, the store's weights) writes the view's codes, latent and energy in
one pass into ``views/NAME/``, and the SSL back-end (`extract.ssl_stream`), when the view asks for
it, into ``views/NAME/streams/ssl`` (layout: `store.views`). So a view is resumable (committed work
units are kept), verifiable (`pipeline verify` checks its arrays) and repairable (`verify --repair`
rebuilds its back-end from the store's record) exactly as the clean streams are.

:class:`ViewAudio` reads an utterance's file at its own sample rate (mono, `extract.audio`), passes it
through the view's chain with the utterance's own random stream (`extract.augment.apply_view`: seeded
by the view's seed and the utterance id, whatever the unit, worker or order) and resamples the result
to the back-end's rate with the store's resampler; the codec and SSL streams of a view therefore see
the same augmented waveform. Utterances outside the view's splits are recorded without frames (stage
``view``), as are those whose extraction failed in the store.

The store records every view's recipe (`extract.augment.View.recipe`: chain with every parameter
resolved, seed, splits, streams, the rng rule and library versions) in ``views/NAME/zarr.json``. A
views file given again for a store resumes or skips its views; a view of the same name with another
recipe is refused (one line) before any audio is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import av
import torch

from common.lease import Lease
from store import format as sf
from store.format import StoreFiles
from store.sslstorage import SSLStorage
from store.views import view_group, view_names, view_record, view_stream_group
from store.writer import StoreError, now

from .audio import AudioError, AudioInfo, load_audio, probe, resample_mono
from .augment import AugmentError, View, apply_view, estimate, format_estimate, load_views, select, view_from_recipe
from .augment.views import version_differences

CODEC_STREAMS = (sf.CODES, sf.LATENT, sf.ENERGY)
CONTENT = ("chain", "seed", "splits", "streams")
"""The recipe's keys that define a view's frames (its description and the library versions do not
refuse a view; other versions are reported)."""


def content(recipe: dict[str, Any]) -> dict[str, Any]:
    return {k: recipe.get(k) for k in CONTENT}


def recipe_sha256(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content(recipe), sort_keys=True).encode()).hexdigest()


@lru_cache(maxsize=8)
def _view(recipe_json: str) -> View:
    """The view of a recipe, built once per process (a simulated room bank is made once)."""
    return view_from_recipe(json.loads(recipe_json))


def table_sha256(store: str) -> str:
    """sha256 of the store's utterance table as stored (what :func:`_utt_ids` is keyed by)."""
    return hashlib.sha256(StoreFiles(store).read_bytes(sf.UTTERANCES)).hexdigest()


@lru_cache(maxsize=4)
def _utt_ids(store: str, table: str) -> tuple[str, ...]:
    """The utterance ids by row of the store's table whose sha256 is ``table``, read once per process
    and table: keyed by the table's content, not by the URL alone, so that a store recreated at the
    same URL (another table) is read again."""
    return tuple(StoreFiles(store).read_table(sf.UTTERANCES)["utt_id"].astype(str))


@dataclass(frozen=True)
class ViewAudio:
    """An augmented view's audio for a back-end (`extract.backend.AudioSource`): the file at its own
    rate, through the view's chain seeded by the row's utterance id, resampled to the asked rate.
    ``recipe``: the view's recipe as JSON (what travels to workers); ``store``: whose utterance
    table names the rows; ``table``: that table's sha256 when the source was made (the key of the
    ids a worker reads once)."""

    store: str
    recipe: str
    where: str = ""
    table: str = ""

    @classmethod
    def of(cls, store: str, view: View | dict) -> ViewAudio:
        recipe = view.recipe() if isinstance(view, View) else view
        return cls(store, json.dumps(recipe, sort_keys=True), f"view {recipe['name']}", table_sha256(store))

    def fingerprint(self) -> dict[str, Any]:
        recipe = json.loads(self.recipe)
        return {"view": recipe["name"], "view_recipe_sha256": recipe_sha256(recipe)}

    def utt_id(self, row: int) -> str:
        """The utterance id of ``row`` in the store's table (as it was when the source was made)."""
        return _utt_ids(self.store, self.table or table_sha256(self.store))[row]

    def _augmented(self, path: str, row: int, info: AudioInfo):
        view = _view(self.recipe)
        mono = load_audio(path, info.sample_rate)[0].numpy()
        try:
            return apply_view(view, self.utt_id(row), mono, info.sample_rate)
        except (AugmentError, ValueError, OSError, RuntimeError, av.error.FFmpegError) as err:  # a codec refusing this audio
            raise AudioError(f"view {view.name!r}: augmentation failed ({type(err).__name__}: {err})") from None

    def probe(self, path: str, row: int) -> AudioInfo:
        """The file's header; for a chain that changes the length (speed), the augmented length."""
        info = probe(path)
        if not any(step.changes_length for step in _view(self.recipe).chain):
            return info
        return AudioInfo(info.sample_rate, len(self._augmented(path, row, info)), 1)

    def load(self, path: str, row: int, sample_rate: int) -> torch.Tensor:
        info = probe(path)
        wav = self._augmented(path, row, info)
        return resample_mono(torch.from_numpy(wav)[None], info.sample_rate, sample_rate)


def outside_rows(table, splits: list[str] | tuple[str, ...], name: str) -> dict[int, str]:
    """Rows of the utterance table outside a view's splits, with the reason recorded for them."""
    inside = table["split"].astype(str).isin(list(splits)).to_numpy()
    reason = f"outside the splits of view {name!r} ({', '.join(splits)})"
    return {int(r): reason for r in (~inside).nonzero()[0]}


# -- planning: before any audio is read ------------------------------------------------------------


def plan_views(path: str, only: str | None, store: str, ssl: str | None) -> dict[str, View]:
    """The views of the views file ``path`` to extract (``only``: "a,b"); AugmentError or StoreError
    (one line) for a bad file, an unknown name, a view the store holds with another recipe, or a view
    asking for the SSL stream without ``--ssl``. Nothing is read but the file and the store's records."""
    views = select(load_views(path), only or "all")
    for name, view in views.items():
        if "ssl" in view.streams and not ssl:
            raise AugmentError(f"{path}: view.{name}: streams has 'ssl': give --ssl MODEL (and its --ssl-* settings) "
                               "to extract the view's SSL stream")
    files = StoreFiles(store)
    if files.exists():
        for name in set(views) & set(view_names(files)):
            stored = view_record(files, name).get("view", {})
            differ = [k for k in CONTENT if content(stored)[k] != content(views[name].recipe())[k]]
            if differ:
                raise StoreError(f"{store} already has a view {name!r} made with another recipe ({', '.join(differ)} "
                                 f"differ); rename the view in {path}, or leave it out with --views-only")
    return views


# -- extraction -------------------------------------------------------------------------------------


def _start_view(url: str, view: View, log: Callable[[str], None]) -> None:
    """Lay down the view's group with its record (once); report other library versions on a resume."""
    files = StoreFiles(url)
    group = view_group(view.name)
    if files.exists(f"{group}/zarr.json"):
        differ = version_differences(view_record(files, view.name).get("view", {}))
        if differ:
            log(f"warning: view {view.name!r} was started with other libraries ({'; '.join(differ)}); its frames "
                "may differ in the last bits from those already made")
        return
    import zarr  # noqa: PLC0415

    zarr.open_group(url, mode="r+").create_group(group, overwrite=True)
    record = {"view": view.recipe(), "created": now()}
    if not set(view.streams) & set(CODEC_STREAMS):
        record["state"] = sf.STATE_COMPLETE  # the group holds no stream of its own
    files.update_group_attrs(record, group)


def extract_views(config, views: dict[str, View], weights, device: str, submit, log: Callable[[str], None],
                  progress, lease: Lease | None) -> tuple[int, list[str]]:
    """Extract (or resume, or skip when complete) each view into the finished store ``config.out``
    through the driver; returns (units run, names of the views that ran units). ``config``: the
    `extract.run.ExtractConfig` (its codec and SSL settings are the views')."""
    from .driver import add_stream  # noqa: PLC0415
    from .run import codec_backend  # noqa: PLC0415

    files = StoreFiles(config.out)
    table = files.read_table(sf.UTTERANCES)
    ok = table["status"] == "ok"
    by_split = table.loc[ok].groupby(table.loc[ok, "split"].astype(str))["duration"]
    seconds = by_split.sum().to_dict()
    fresh = {n: v for n, v in views.items() if n not in view_names(files)}
    if fresh:
        costs = estimate(fresh, seconds, _ssl_layers(config), utterances=by_split.count().to_dict(),
                         ssl_storage=_ssl_storage(config))
        log("estimated cost of the new views:\n" + format_estimate(costs))
    ran, names = 0, []
    for name, view in views.items():
        missing = [s for s in view.splits if s not in seconds]
        if len(missing) == len(view.splits):
            log(f"warning: view {name!r} applies to split(s) {', '.join(view.splits)}, none of which the store has")
        _start_view(config.out, view, log)
        audio = ViewAudio.of(config.out, view)
        skip = outside_rows(table, view.splits, name)
        streams = tuple(s for s in CODEC_STREAMS if s in view.streams)
        units = 0
        if streams:
            backend = dataclasses.replace(codec_backend(config, weights, device, streams, view_group(name), lease),
                                          audio=audio)
            units += add_stream(backend, config.unit_size, device, submit, log, progress, lease, skip)
        if "ssl" in view.streams:
            from .ssl_stream import ssl_backend  # noqa: PLC0415

            base = ssl_backend(config, device, backend_threads(config, device), lease.token if lease else None)
            backend = dataclasses.replace(base, group=view_stream_group(name, config.ssl_stream), audio=audio)
            units += add_stream(backend, config.unit_size, device, submit, log, progress, lease, skip)
        ran += units
        names += [name] if units else []
    return ran, names


def backend_threads(config, device: str) -> int:
    from .run import _default_decode_threads  # noqa: PLC0415

    return config.decode_threads or _default_decode_threads(device)


def _ssl_layers(config) -> int:
    if not config.ssl:
        return 12
    from .ssl import architecture, parse_layers  # noqa: PLC0415
    from .ssl_stream import default_layers  # noqa: PLC0415

    return len(parse_layers(config.ssl_layers or default_layers(config.ssl), architecture(config.ssl).num_layers))


def _ssl_storage(config) -> SSLStorage | None:
    """The storage the views' SSL stream gets: the store's SSL stream's (`extract.ssl_stream.chosen_storage`)."""
    if not config.ssl:
        return None
    from .ssl_stream import chosen_storage  # noqa: PLC0415

    return SSLStorage.parse(chosen_storage(config.out, config.ssl_stream, config.ssl_storage))


def view_backend_audio(url: str, group: str) -> ViewAudio | None:
    """The audio source of the view that owns stream group ``group`` (None: not a view's), rebuilt
    from the store's record: what `verify --repair` re-extracts a view's units with."""
    parts = group.split("/")
    if len(parts) < 2 or parts[0] != view_group("x").split("/")[0]:
        return None
    return ViewAudio.of(url, view_record(StoreFiles(url), parts[1])["view"])


def view_skip(url: str, group: str, table) -> dict[int, str]:
    """Rows outside the splits of the view that owns ``group`` (none when it is not a view's)."""
    audio = view_backend_audio(url, group)
    if audio is None:
        return {}
    recipe = json.loads(audio.recipe)
    return outside_rows(table, recipe["splits"], recipe["name"])


__all__ = ["ViewAudio", "extract_views", "plan_views", "view_backend_audio", "view_skip"]
