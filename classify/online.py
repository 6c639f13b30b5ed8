"""Online SSL features: the SSL layers computed from the audio during training, instead of read from
the store's SSL stream (``ssl_kwargs.online``, `pipeline train --ssl-online`).

For corpora whose SSL cache would be too large (12 WavLM-Large layers: 1.2 MB per audio second,
about 100 GB for ASVspoof 2019 LA train). Each batch decodes its utterances at 16 kHz and runs the
frozen SSL model on exactly the audio the cached stream would hold: the whole utterance, or (with a
crop) the same centre crop of train utterances (`extract.ssl_stream.utterance_span`); then the crop's
frames are taken. The features therefore equal the cached stream's to float16 rounding (a test checks
it), and training draws the same crops from either. The price: every training step runs the SSL model
over whole utterances (or crops), not only the training crop, so an epoch costs about one SSL
extraction of the train split (see BENCHMARKS.md).

This module is the one place where `classify` uses the extraction code (decoding, the SSL model):
it imports it inside the functions that need it, so `classify` as a whole never loads `extract`,
`torchaudio` or `encodec` unless online features are asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from classify.frames import FrameReader, length_batches, register_reader
from classify.ssloptions import SSLOptions
from store.reader import FeatureStore


def online_source(options: SSLOptions) -> dict[str, Any]:
    """The SSL stream source (as `pipeline extract --ssl` would record it) of the options' model,
    weights, layers and crop, for online features of a store without an SSL stream."""
    from extract import ssl as ssl_model  # noqa: PLC0415 - lazy, see the module docstring
    from extract.ssl_stream import CROP_SPLITS, default_layers, stream_source  # noqa: PLC0415

    if options.model is None:
        raise ValueError(f"online SSL features for a store without stream {options.stream!r} need "
                         "ssl_kwargs.model (e.g. wavlm-large) and ssl_kwargs.weights")
    arch = ssl_model.architecture(options.model)
    layers = ssl_model.parse_layers(options.layers or default_layers(options.model), arch.num_layers)
    weights = ssl_model.resolve_weights(options.model, options.weights, max(layers), download=False)
    return stream_source(weights, layers, options.crop_seconds, CROP_SPLITS if options.crop_seconds else ())


@register_reader("ssl-online")
class OnlineSSLReader(FrameReader):
    """SSL frames computed from the store's audio files: float16 [B, T, L', H] (the layers
    ``layer_index`` of the ``source`` record's), as the `store` reader gives a cached stream's
    (``as_trained``: the model's `classify.fusion.FusedDetector.ssl_as_trained`, which codes and
    decodes them as a stream stored as int8 or ``pca:K`` holds them);
    ``offsets`` and ``starts`` are those the cached stream would have."""

    def __init__(self, store: FeatureStore, source: dict[str, Any], layer_index: np.ndarray, options: SSLOptions,
                 device: str = "cpu", as_trained: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        from extract import ssl as ssl_model  # noqa: PLC0415 - lazy, see the module docstring
        from extract.audio import load_audio, resampled_length  # noqa: PLC0415
        from extract.ssl_stream import utterance_span  # noqa: PLC0415

        self._load = load_audio
        self.rate = ssl_model.SSL_SAMPLE_RATE
        weights = ssl_model.SSLWeights.from_dict(source["weights"])
        device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        self.model = ssl_model.front_end(weights, tuple(source["layers"]), device, *ssl_model.recorded_windows(source))
        self.layer_index = layer_index
        self.as_trained = as_trained
        self.name = f"{options.stream} (online)"
        self.batch_samples = int(options.batch_seconds * self.rate)
        table = store.utterances
        crop, splits = source.get("crop_seconds"), tuple(source.get("crop_splits") or ())
        self.paths = table["path"].tolist()
        self.spans: list[tuple[int, int]] = []
        counts, starts = [], []
        for row in table.itertuples():
            if row.status != "ok" or not row.duration or not np.isfinite(row.duration):
                self.spans.append((0, 0))
                counts.append(0)
                starts.append(-1)
                continue
            n = resampled_length(int(round(row.duration * row.sample_rate)), int(row.sample_rate), self.rate)
            start, length = utterance_span(n, row.split, crop, splits)
            self.spans.append((start, length))
            counts.append(ssl_model.ssl_frames(length))
            starts.append(start // ssl_model.SSL_HOP if counts[-1] else -1)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.starts = np.asarray(starts, dtype=np.int64)

    def features(self, rows: np.ndarray) -> list[torch.Tensor]:
        """float32 [frames, L, H] of each row's span (the SSL model over the decoded audio)."""
        wavs = []
        for row in rows:
            start, length = self.spans[int(row)]
            wavs.append(self._load(self.paths[int(row)], target_rate=self.rate)[0][start : start + length])
        results: dict[int, torch.Tensor] = {}
        for chosen in length_batches([w.numel() for w in wavs], self.batch_samples):  # longest first, padded budget
            for index, layers in zip(chosen.tolist(), self.model([wavs[i] for i in chosen])):
                results[index] = layers
        return [results[i] for i in range(len(wavs))]

    def read(self, rows: np.ndarray, relative: np.ndarray) -> np.ndarray:
        per_row = [layers[torch.from_numpy(rel)][:, self.layer_index] for layers, rel in zip(self.features(rows), relative)]
        if self.as_trained is not None:  # coded and decoded as the stream's storage would hold them (int8, pca:K)
            return np.stack([self.as_trained(layers.numpy()).astype(np.float16, copy=False) for layers in per_row])
        return np.stack([layers.to(torch.float16).numpy() for layers in per_row])
