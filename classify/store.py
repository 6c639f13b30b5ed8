"""The feature store reader: codes, codebooks, latent and the utterance table of a finished store.

Layout and names are in :mod:`extract.storeformat` (plain constants; no codec code). Codes are
small (1.2 KB per audio second at 8 levels) and are read into RAM by default; ``in_memory=False``
reads them chunk-wise from the Zarr array instead. The latent (19 KB per audio second) is read
lazily per utterance unless asked for in RAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import zarr

from extract import storeformat as sf
from extract.storeformat import StoreFiles


class StoreReadError(ValueError):
    """The store is missing, unfinished, of another format, or lacks what was asked for."""


@dataclass(frozen=True)
class CodecInfo:
    """What made the features: must match between a store and a checkpoint."""

    name: str
    sample_rate: int
    frame_rate: int
    n_q: int
    bandwidth: float
    codebook_size: int
    dim: int
    parameters: int
    weights_sha256: str
    weights_label: str
    trained: bool

    def compatible_with(self, other: "CodecInfo") -> list[str]:
        """Names of the fields that differ in a way that makes features incomparable."""
        keys = ("name", "n_q", "bandwidth", "codebook_size", "dim", "weights_sha256")
        return [k for k in keys if getattr(self, k) != getattr(other, k)]


class FeatureStore:
    """A finished feature store, opened read-only. ``url``: a path or an fsspec URL."""

    def __init__(self, url: str, in_memory: bool = True):
        self.url = str(url)
        self.files = StoreFiles(self.url)
        if not self.files.exists():
            raise StoreReadError(f"{self.url}: no feature store here (no zarr.json)")
        self.attrs = self.files.read_group_attrs()
        if self.attrs.get("format") != sf.FORMAT:
            raise StoreReadError(f"{self.url}: not a feature store of this tool (format {self.attrs.get('format')!r})")
        if self.attrs.get("format_version", 0) > sf.FORMAT_VERSION:
            raise StoreReadError(f"{self.url}: store format version {self.attrs['format_version']} is newer than this tool's {sf.FORMAT_VERSION}")
        if self.attrs.get("state") != sf.STATE_COMPLETE:
            raise StoreReadError(f"{self.url}: extraction is not finished (state {self.attrs.get('state')!r}); run `pipeline extract` again to resume it")
        self.root = zarr.open_group(self.url, mode="r")
        self.in_memory = in_memory

    @cached_property
    def codec(self) -> CodecInfo:
        c, w = self.attrs["codec"], self.attrs["weights"]
        return CodecInfo(
            name=c["name"],
            sample_rate=c["sample_rate"],
            frame_rate=c["frame_rate"],
            n_q=c["n_q"],
            bandwidth=c["bandwidth"],
            codebook_size=c["codebook_size"],
            dim=c["dim"],
            parameters=c["parameters"],
            weights_sha256=w["sha256"],
            weights_label=w["label"],
            trained=w["trained"],
        )

    @cached_property
    def utterances(self) -> pd.DataFrame:
        """Every utterance of the protocol; rows with status "failed" have no frames."""
        return self.files.read_table(sf.UTTERANCES)

    @cached_property
    def failures(self) -> pd.DataFrame:
        return self.files.read_table(sf.FAILURES)

    @cached_property
    def offsets(self) -> np.ndarray:
        return self.root[sf.OFFSETS][...]

    @cached_property
    def codebooks(self) -> np.ndarray:
        """float32 [n_q, codebook_size, dim]"""
        return self.root[sf.CODEBOOKS][...]

    @cached_property
    def codes(self) -> np.ndarray | zarr.Array:
        """uint16 [total_frames, n_q]: in RAM, or the Zarr array itself when in_memory=False."""
        array = self.root[sf.CODES]
        return array[...] if self.in_memory else array

    @property
    def has_latent(self) -> bool:
        return sf.LATENT in self.root

    @cached_property
    def latent(self) -> zarr.Array:
        """float16 [total_frames, dim], read lazily."""
        if not self.has_latent:
            raise StoreReadError(f"{self.url}: this store has no latent; re-extract with --latent")
        return self.root[sf.LATENT]

    def split(self, name: str) -> pd.DataFrame:
        """The ok utterances of one split (the table's index is the utterance's row number)."""
        table = self.utterances
        known = sorted(table["split"].unique())
        if name not in known:
            raise StoreReadError(f"{self.url}: no split {name!r}; the store has {', '.join(known)}")
        return table[(table["split"] == name) & (table["status"] == "ok")]

    def utterance_codes(self, row: int) -> np.ndarray:
        """uint16 [frames, n_q] of utterance ``row``."""
        return np.asarray(self.codes[self.offsets[row] : self.offsets[row + 1]])

    def utterance_latent(self, row: int) -> np.ndarray:
        """float16 [frames, dim] of utterance ``row``."""
        return self.latent[self.offsets[row] : self.offsets[row + 1]]

    def embeddings(self, codes: np.ndarray) -> np.ndarray:
        """Dense per-level embeddings float32 [frames, n_q, dim] for codes [frames, n_q] (C_q[code_q])."""
        levels = np.arange(codes.shape[1])
        return self.codebooks[levels[None, :], codes.astype(np.int64)]
