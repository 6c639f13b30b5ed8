"""Which streams a model reads, and their frame readers opened over a store: the one place that
picks the backends (`classify.frames`) for training and evaluation; the Detector opens the same
streams over files' features in RAM (`classify.detector`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from classify import online  # noqa: F401 - registers the ssl-online reader (it imports `extract` only when used)
from classify.data import FrameSource
from classify.frames import FrameReader, open_reader
from classify.fusion import FusedDetector
from classify.ssloptions import SSLOptions
from common.malloc import keep_large_blocks
from store.reader import FeatureStore
from store.sslstorage import SSLStorage, read_pca


def model_streams(model: nn.Module) -> tuple[bool, str | None, bool]:
    """(reads the codes, the continuous stream it reads beside them (`latent`, `energy`) or None,
    reads the SSL layers) for a SpoofDetector or FusedDetector."""
    weighting = model.weighting
    stream = weighting.spec.stream if weighting is not None else None
    return weighting is not None, stream.name if stream is not None else None, isinstance(model, FusedDetector)


def stream_reader(store: FeatureStore, stream: str, ram_bytes: float) -> FrameReader:
    """The reader of ``stream`` (`latent`, `energy`), which must have the codes' frames."""
    hint = (f"the {stream!r} variant needs it: re-extract with --{stream} (an existing store gets the "
            "stream added, untouched otherwise)")
    return open_reader("store", store, stream, ram_bytes, aligned=True, hint=hint)


def codec_source(store: FeatureStore, stream: str | None = None, ram_bytes: float = 0) -> FrameSource:
    """The codec variants' source: the codes (checked), and ``stream`` beside them (in RAM when it
    is no larger than ``ram_bytes``, else read per crop)."""
    latent = None if stream is None else stream_reader(store, stream, ram_bytes)
    return FrameSource.of(codes=open_reader("codes", store), latent=latent)


def make_source(store: FeatureStore, model: nn.Module, config: dict[str, Any]) -> FrameSource:
    """The batches' source for ``model`` (a training config as a dict): the codec's streams, and for
    the SSL variants the SSL layers, cached in the store or computed online (``ssl_kwargs.online``)."""
    codes, stream, ssl = model_streams(model)
    if not ssl:
        return codec_source(store, stream, config["latent_ram_mb"] * 2**20)
    latent = None if stream is None else stream_reader(store, stream, config["latent_ram_mb"] * 2**20)
    options = SSLOptions.from_dict(config.get("ssl_kwargs"))
    keep_large_blocks()  # batches and activations of 100s of MB every step: reused, not faulted afresh (common.malloc)
    if options.online:
        layers = open_reader("ssl-online", store, model.ssl_source, model.layer_index, options,
                             config.get("device", "cpu"), as_trained=model.ssl_as_trained)
    else:
        layers = open_reader("store", store, options.stream, options.ram_mb * 2**20, columns=model.layer_index,
                             as_trained=stored_as_trained(store, options.stream, model))
    return FrameSource.of(open_reader("codes", store) if codes else None, latent, layers)


def stored_as_trained(store: FeatureStore, stream: str, model: FusedDetector) -> Callable[[np.ndarray], np.ndarray] | None:
    """What the SSL frames of ``store``'s ``stream`` (decoded) need to be as ``model`` saw its training
    stream's: nothing (None) when the stream is stored as that one was (the same storage; for
    ``pca:K`` the same basis of the model's layers), or when the model was trained on float16 frames;
    else the model's own coding (`classify.fusion.FusedDetector.ssl_as_trained`): an int8 or
    ``pca:K`` model evaluated on a store of float16 frames, or of another storage or basis, reads
    them coded as its training reader gave them."""
    spec = store.streams.get(stream)
    trained = model.ssl_storage
    if spec is None or trained.plain:
        return None
    if SSLStorage.from_source(spec.source) == trained:
        pca, mine = read_pca(store.root, spec), model.pca
        if pca is None or mine is None or all(np.array_equal(a[model.layer_index], b) for a, b in zip(pca, mine)):
            return None
    return model.ssl_as_trained
