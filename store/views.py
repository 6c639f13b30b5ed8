"""Augmented views in the store: their layout, their record, and a view opened as a store.

An augmented view (`extract.augment`, README "Augmented views") is a seeded augmented copy of the
utterances of some splits, extracted through the same driver and back-ends as the clean audio
(`extract.views`) and written beside the clean streams::

    STORE.zarr/views/NAME/        a group; attributes: view (the recipe that re-makes it: chain,
      zarr.json                   seed, splits, streams, library versions), state, config,
                                  provenance, streams (the codec streams' specs), summary
      codes, latent, energy       the view's codec streams (those it asks for), frames as the store's
      offsets                     utterance i = frames offsets[i]:offsets[i+1] (every utterance of the
                                  store; those outside the view's splits have none)
      failures.parquet            utterances with no frames here, with the reason (outside the view's
                                  splits, extraction failed in the store: stage "store"; augmentation or decoding failed: "audio")
      streams/ssl/                the SSL stream of the view, when it asks for one (as an added stream)

:func:`view_names`, :func:`view_record` and :func:`view_specs` read that layout; :class:`ViewStore`
is the store seen through one view (its streams are the view's, everything else the store's), so
that every reader of a store (training, scoring, export) reads a view unchanged and under the same
utterance ids. Stores without views (all made before views existed) have no ``views/`` group and
open as before.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from . import format as sf
from .format import StoreFiles, StreamSpec
from .reader import FeatureStore, StoreReadError

VIEWS = "views"


def view_group(name: str) -> str:
    return f"{VIEWS}/{name}"


def view_stream_group(name: str, stream: str) -> str:
    """The group of a view's stream added apart from its codec streams (the SSL stream)."""
    return f"{view_group(name)}/{sf.STREAMS}/{stream}"


def view_names(files: StoreFiles) -> list[str]:
    """The views the store has (finished or not), by name."""
    return [n for n in files.list(VIEWS) if files.exists(f"{view_group(n)}/zarr.json")]


def view_record(files: StoreFiles, name: str) -> dict[str, Any]:
    """The view group's attributes (``view``: its recipe; ``state``, ``summary`` of its codec streams)."""
    return files.read_group_attrs(view_group(name))


def _groups(files: StoreFiles, name: str) -> list[str]:
    """The view's stream groups: its own (the codec streams) and those under ``streams/``."""
    group = view_group(name)
    return [group] + [f"{group}/{sf.STREAMS}/{s}" for s in files.list(f"{group}/{sf.STREAMS}")
                      if files.exists(f"{group}/{sf.STREAMS}/{s}/zarr.json")]


def view_specs(files: StoreFiles, name: str, complete: bool = True) -> dict[str, StreamSpec]:
    """The view's streams by name (``complete``: finished ones only; else those still being added)."""
    out = {}
    for group in _groups(files, name):
        attrs = files.read_group_attrs(group)
        if (attrs.get("state") == sf.STATE_COMPLETE) == complete:
            out.update({spec.name: spec for spec in sf.group_stream_specs(attrs)})
    return out


def all_view_specs(files: StoreFiles, complete: bool = True) -> dict[str, StreamSpec]:
    """Every view's streams, keyed ``views/NAME/STREAM`` (what `pipeline verify` checks)."""
    return {f"{view_group(v)}/{s}": spec for v in view_names(files) for s, spec in view_specs(files, v, complete).items()}


def unfinished_views(files: StoreFiles) -> dict[str, list[str]]:
    """The views with a stream still being extracted: {NAME: [STREAM or "codec streams", ...]}."""
    out = {}
    for v in view_names(files):
        groups = [g for g in _groups(files, v) if files.read_group_attrs(g).get("state") != sf.STATE_COMPLETE]
        if groups:
            out[v] = [g.rsplit("/", 1)[-1] if g != view_group(v) else "codec streams" for g in groups]
    return out


def pending_views(files: StoreFiles) -> list[str]:
    """``NAME (STREAM, ...)`` of each view with a stream still being extracted."""
    return [f"{v} ({', '.join(streams)})" for v, streams in unfinished_views(files).items()]


def state_token(files: StoreFiles) -> str:
    """sha256 of the group records (``zarr.json``) of the store, its added streams, its views and
    their streams: it changes when the store is recreated, a stream or view is added or removed, or
    one finishes; what a per-process cache of opened stores is keyed by beside the URL."""
    groups = [""] + [sf.added_stream_group(s) for s in files.list(sf.STREAMS)]
    groups += [g for v in view_names(files) for g in _groups(files, v)]
    digest = hashlib.sha256()
    for group in groups:
        name = f"{group}/zarr.json" if group else "zarr.json"
        if files.exists(name):
            digest.update(name.encode() + b"\0" + files.read_bytes(name) + b"\0")
    return digest.hexdigest()


def recipes(files: StoreFiles) -> dict[str, dict]:
    """The recipe of every view the store has, by name."""
    return {v: view_record(files, v).get("view", {}) for v in view_names(files)}


def view_list(files: StoreFiles, table: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """``[{name, splits, seed, chain, versions, streams, description, state, ...}]`` of every view
    (what `pipeline inspect --json` lists): the recipe, and for a finished view its utterances with
    frames, failures inside its splits, audio seconds and bytes on disk per audio second."""
    out = []
    for name in view_names(files):
        record = view_record(files, name)
        recipe = record.get("view", {})
        entry = {"name": name, **{k: recipe.get(k) for k in ("splits", "seed", "chain", "versions", "streams",
                                                             "description", "rng")}}
        finished = view_specs(files, name)
        entry["state"] = sf.STATE_COMPLETE if finished and not view_specs(files, name, complete=False) else sf.STATE_EXTRACTING
        entry["stored_streams"] = sorted(finished)
        if table is not None and finished:
            spec = next(iter(finished.values()))
            counts = np.diff(np.asarray(_read_offsets(files, spec.offsets)))
            inside = table["split"].astype(str).isin(recipe.get("splits", [])).to_numpy()
            ok = inside & (counts > 0)
            seconds = float(table.loc[ok, "duration"].sum())
            size = files.size(view_group(name))
            entry.update(utterances=int(inside.sum()), ok=int(ok.sum()), failed=int((inside & (counts == 0)).sum()),
                         audio_seconds=seconds, bytes=size, bytes_per_audio_second=size / seconds if seconds else None)
        out.append(entry)
    return out


def _read_offsets(files: StoreFiles, path: str) -> np.ndarray:
    import zarr  # noqa: PLC0415

    return zarr.open_group(files.url, mode="r")[path][...]


def format_views(views: list[dict[str, Any]]) -> list[str]:
    """The report's lines of :func:`view_list`."""
    lines = []
    for v in views:
        chain = " -> ".join(str(step.get("augment")) for step in v.get("chain") or [])
        done = (f"{v['ok']} of {v['utterances']} utterances" + (f", {v['failed']} failed" if v.get("failed") else "")
                + (f", {v['bytes_per_audio_second']:,.0f} B per audio s" if v.get("bytes_per_audio_second") else "")
                if "ok" in v else v["state"].upper())
        lines.append(f"view        {v['name']}: {chain} (seed {v['seed']}, splits {', '.join(v['splits'] or [])}; "
                     f"streams {', '.join(v['stored_streams']) or 'none yet'}); {done}")
    return lines


class ViewStore(FeatureStore):
    """The finished store ``store`` (a FeatureStore) seen through its view ``name``: ``streams``,
    ``stream``, ``offsets``, ``codes``, ``latent`` and ``aligned`` are the view's; ``utterances`` is
    the store's table with the view's frames (``status`` "failed" where the view has none: outside
    its splits, or its extraction failed); everything else (codec, codebooks, attributes, ``url``)
    is the store's. ``view_name`` and ``recipe`` name the view and hold its recipe."""

    def __init__(self, store: FeatureStore, name: str) -> None:  # not super().__init__: the store is read already
        self.__dict__.update({k: v for k, v in store.__dict__.items() if k in ("url", "files", "attrs", "root", "in_memory")})
        self._offsets_read = {}
        self.view_name = name
        if name not in view_names(self.files):
            have = ", ".join(view_names(self.files)) or "none"
            raise StoreReadError(f"{self.url}: no view {name!r}; this store has: {have} (`pipeline extract --views FILE` "
                                 "adds views)")
        self.recipe = view_record(self.files, name).get("view", {})
        if not view_specs(self.files, name):
            raise StoreReadError(f"{self.url}: view {name!r} is still being extracted; run the same `pipeline extract "
                                 "--views ...` again to finish it")
        self._clean = store

    @cached_property
    def streams(self) -> dict[str, StreamSpec]:
        return view_specs(self.files, self.view_name)

    def pending_streams(self) -> list[str]:
        return sorted(view_specs(self.files, self.view_name, complete=False))

    @property
    def splits(self) -> list[str]:
        return list(self.recipe.get("splits", []))

    @cached_property
    def utterances(self) -> pd.DataFrame:
        table = self._clean.utterances.copy()
        spec = self.streams.get(sf.CODES) or next(iter(self.streams.values()))
        offsets = self._offsets(spec.offsets)
        counts = np.diff(offsets)
        table["status"] = np.where((counts > 0) & (table["status"] == "ok").to_numpy(), "ok", "failed")
        table["n_frames"], table["frame_offset"] = counts.astype(np.int64), offsets[:-1]
        return table
