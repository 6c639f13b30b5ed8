"""The Detector's front end: audio -> codec codes exactly as `pipeline extract` stores them.

No skew between training and serving: a file is checked and decoded by `extract.audio.probe` and
`extract.audio.load_audio`, a waveform converted by `extract.audio.to_codec_audio` (what
`load_audio` applies), files are grouped by length with `extract.unit.length_batches`, and encoded
by `extract.encoder.BatchEncoder` with the window and minimum-batch settings of the model's
training store. One difference, for bounded memory: a file longer than one encoder window is
encoded a few windows at a time (as many as the batch budget holds, at least one), where
extraction encodes all of its windows in one padded batch; the windows are the same, so the codes
differ only by float rounding of the batched encoder (see `extract.encoder`).

Thread safety: the encoder keeps per-call state on its instance (the valid lengths its reflection
hooks track), so :class:`FrontEnd` encodes under a lock; decoding runs outside it.

Every problem with one file (unknown extension, missing, empty, truncated, not audio, NaN samples,
a file that changes or vanishes while it is read) becomes that file's error; the others go on.

Models of the SSL variants (``ssl``, ``ssl+V``) also need the SSL stream: with an
`extract.ssl.SSLFrontEnd` (:func:`ssl_front_end` finds its weights by sha256), each file is also
decoded at 16 kHz (`extract.audio.load_audio`, as `extract.ssl_stream` decodes it), run through
the SSL model uncropped, as extraction runs dev and eval utterances: in one pass up to 34 s, a longer
file in the windows the stream recorded (`extract.ssl.ssl_windows`, 30 s of frames each with 2 s of
context either side), and its layers kept as float16, as the store keeps them.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from encodec import EncodecModel

from common.weights import PRETRAINED, UNTRAINED, file_sha256

from .audio import (
    AUDIO_EXTENSIONS,
    CODEC_SAMPLE_RATE,
    AudioError,
    frame_energy,
    load_audio,
    probe,
    resampled_length,
    to_codec_audio,
)
from .codec import HOP_LENGTH, WeightsError, codec_codebooks, n_quantizers, new_model
from .encoder import BatchEncoder, Encoded
from .ssl import (
    SSL_RECEPTIVE_FIELD,
    SSL_SAMPLE_RATE,
    SSLFrontEnd,
    SSLWeights,
    SSLWeightsError,
    architecture,
    front_end,
    load_model,
    pretrained_path,
    recorded_windows,
)
from .unit import length_batches

__all__ = ["AUDIO_EXTENSIONS", "MIN_BATCH_SECONDS", "WINDOW_SECONDS", "Features", "FrontEnd", "build_codec",
           "codec_codebooks", "crop_or_tile", "find_audio", "ssl_front_end"]
WINDOW_SECONDS = 60.0
MIN_BATCH_SECONDS = 0.5
"""Encoder settings of stores that did not record theirs (`extract.run.ExtractConfig`'s defaults)."""


def find_audio(folder: str | Path) -> Iterator[Path]:
    """Audio files under ``folder`` (recursive, by :data:`AUDIO_EXTENSIONS`, case-insensitive), sorted."""
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix.lower() in AUDIO_EXTENSIONS and not path.is_dir():
            yield path


def build_codec(data: bytes, bandwidth: float, n_q: int, where: str) -> EncodecModel:
    """EnCodec 24 kHz from state dict bytes (``torch.load(weights_only=True)``: never executes code),
    checked to give ``n_q`` quantizers at ``bandwidth``. WeightsError names ``where`` otherwise."""
    if n_quantizers(bandwidth) != n_q:
        raise WeightsError(f"the model was trained on {n_q} quantizer levels, but bandwidth {bandwidth:g} kbps "
                           f"gives {n_quantizers(bandwidth)}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = new_model()
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - torch raises several types for foreign or corrupt files
        raise WeightsError(f"{where}: not an EnCodec 24 kHz state dict ({type(err).__name__}: {err})") from None
    return model.eval()


def ssl_front_end(source: dict, override: str | Path | None = None, device: str = "cpu",
                  download: bool = True) -> tuple[SSLFrontEnd, str]:
    """(the SSL front end of an SSL stream ``source`` record, where its weights came from). Untrained
    weights are rebuilt from their seed; others are looked for by their recorded sha256 in: the file
    ``override`` (``--ssl-weights``, and then only there); the file they were extracted with; for
    pretrained weights, the torch hub cache, then torchaudio's URL (when ``download``).
    SSLWeightsError listing every place tried when none has them."""
    weights = SSLWeights.from_dict(source["weights"])
    layers = tuple(source["layers"])
    arch = architecture(weights.model)
    windows = recorded_windows(source)
    if weights.source == UNTRAINED and override is None:
        return front_end(weights, layers, device, *windows), f"rebuilt from {weights.origin} (UNTRAINED)"
    candidates: list[tuple[str, object]] = []
    if override is not None:
        candidates.append((f"--ssl-weights {override}", lambda: Path(override)))
    else:
        candidates.append((f"the file the SSL stream was extracted with, {weights.origin}", lambda: Path(weights.origin)))
        if weights.source == PRETRAINED:
            candidates.append(("the torch hub cache", lambda: pretrained_path(arch, download=False)))
            if download:
                candidates.append(("torchaudio's URL", lambda: pretrained_path(arch, download=True)))
    tried = []
    for where, find in candidates:
        try:
            path = find()
            if not path.is_file():
                raise SSLWeightsError("no such file")
            digest = file_sha256(path)
        except Exception as err:  # noqa: BLE001 - any failure of one place means: try the next
            tried.append(f"{where}: {err}")
            continue
        if digest == weights.sha256:
            return SSLFrontEnd(arch, load_model(arch, max(layers), path), layers, device, *windows), where
        tried.append(f"{where}: sha256 {digest[:12]}..., not the model's")
    raise SSLWeightsError(f"cannot find the SSL weights this model was trained with ({weights.label}; sha256 "
                          f"{weights.sha256}). Tried: {'; '.join(tried)}. Pass the file with --ssl-weights FILE.")


@dataclass
class Features:
    """One file's features: ``codes`` uint16 [frames, n_q] and ``latent`` float16 [frames, dim] (or
    None), as a store holds them; ``duration`` in seconds of the source audio (header, before any
    crop); ``error`` the reason when the file could not be used (then codes is None)."""

    path: str
    codes: np.ndarray | None = None
    latent: np.ndarray | None = None
    duration: float | None = None
    n_windows: int = 0
    error: str = ""
    ssl: np.ndarray | None = None
    """float16 [SSL frames, L, H]: the SSL stream's layers (models of the SSL variants only)."""


def crop_or_tile(wav: torch.Tensor, samples: int) -> torch.Tensor:
    """[1, T] -> [1, samples]: the first ``samples`` samples; a shorter waveform is tiled (repeated
    from its start) up to that length, as the ASVspoof baselines pad their fixed-length inputs."""
    if wav.shape[-1] >= samples:
        return wav[:, :samples]
    return wav.repeat(1, math.ceil(samples / wav.shape[-1]))[:, :samples]


class FrontEnd:
    """Audio -> codes with one frozen codec. ``model``: the codec (weights checked by the caller);
    ``bandwidth``: kbps (the number of levels); ``latent``: also return the continuous latent;
    ``energy``: return the energy stream (`extract.audio.frame_energy` of the same 24 kHz waveform,
    as extraction computes it) in ``Encoded.latent`` instead (the `energy` control's models);
    ``window_seconds``/``min_batch_seconds``: the training store's encoder settings; ``ssl``: also
    return the SSL stream's layers (files longer than ``max_seconds`` are then refused, as the SSL
    stream's extraction refuses them; a file over 34 s runs in the stream's windows,
    `extract.ssl.ssl_windows`).

    ``timings`` accumulates seconds spent decoding (files: read + resample), encoding ("codec") and,
    with ``ssl``, in the SSL model ("ssl")."""

    def __init__(self, model: EncodecModel, bandwidth: float, device: str = "cpu", latent: bool = False,
                 energy: bool = False, window_seconds: float = WINDOW_SECONDS, min_batch_seconds: float = MIN_BATCH_SECONDS,
                 ssl: SSLFrontEnd | None = None, max_seconds: float = 3600.0) -> None:
        if latent and energy:
            raise ValueError("a model reads one continuous stream: latent or energy, not both")
        self.energy = energy
        self.encoder = BatchEncoder(model, bandwidth, device=device, latent=latent, window_seconds=window_seconds,
                                    min_batch_seconds=min_batch_seconds)
        self.sample_rate = CODEC_SAMPLE_RATE
        self.ssl = ssl
        self.max_seconds = max_seconds
        self._lock = threading.Lock()
        self._timing_lock = threading.Lock()
        self.timings = {"decode": 0.0, "codec": 0.0, **({"ssl": 0.0} if ssl is not None else {})}

    def add_time(self, key: str, seconds: float) -> None:
        """Add ``seconds`` to ``timings[key]`` (thread-safe)."""
        with self._timing_lock:
            self.timings[key] = self.timings.get(key, 0.0) + seconds

    def prepare(self, waveform: np.ndarray | torch.Tensor, sample_rate: int,
                target_rate: int = CODEC_SAMPLE_RATE) -> torch.Tensor:
        """A waveform (float, [T] or [channels, T]) -> mono float32 [1, T'] at ``target_rate`` (24 kHz:
        the codec's; 16 kHz: the SSL model's), converted as a decoded file is. ValueError for an
        empty, non-float or non-finite waveform."""
        wav = torch.as_tensor(waveform)
        if not wav.is_floating_point():
            raise ValueError(f"waveform must be floating point in [-1, 1], got {wav.dtype}; scale integer "
                             "samples first (e.g. int16 / 32768)")
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise ValueError(f"waveform must be [samples] or [channels, samples] with samples > 0, got shape "
                             f"{tuple(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise ValueError(f"waveform has {int((~torch.isfinite(wav)).sum())} non-finite (NaN/inf) samples")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        return to_codec_audio(wav.to(torch.float32).contiguous(), int(sample_rate), target_rate)

    def encode(self, wavs: Sequence[torch.Tensor], budget: int) -> list[Encoded]:
        """Encode waveforms [1, T] at 24 kHz as a batch; a waveform longer than one encoder window is
        encoded alone, ``max(1, budget // window)`` windows per forward pass."""
        started = time.perf_counter()
        window = self.encoder.window
        short = [i for i, w in enumerate(wavs) if w.shape[-1] <= window]
        out: dict[int, Encoded] = {}
        with self._lock:
            if short:
                out.update(zip(short, self.encoder.encode([wavs[i] for i in short])))
            step = max(1, budget // window) * window
            for i in (i for i in range(len(wavs)) if i not in out):
                parts = [self.encoder.encode([wavs[i][:, s : s + step]])[0] for s in range(0, wavs[i].shape[-1], step)]
                latent = np.concatenate([p.latent for p in parts]) if self.encoder.latent else None
                out[i] = Encoded(codes=np.concatenate([p.codes for p in parts]), latent=latent,
                                 n_windows=sum(p.n_windows for p in parts))
        if self.energy:  # outside the lock: it reads only the waveform
            for i, encoded in out.items():
                encoded.latent = frame_energy(wavs[i], HOP_LENGTH)
        self.add_time("codec", time.perf_counter() - started)
        return [out[i] for i in range(len(wavs))]

    def encode_ssl(self, wavs: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """The SSL stream's layers, float16 [frames, L, H], of 16 kHz waveforms [1, T] run as one
        padded batch (`extract.ssl.SSLFrontEnd`, as `extract.ssl_stream` runs it)."""
        started = time.perf_counter()
        with self._lock:
            layers = self.ssl(list(wavs))
        self.add_time("ssl", time.perf_counter() - started)
        return [frames.to(torch.float16).numpy() for frames in layers]

    def _load(self, path: str, crop: float | None) -> tuple[torch.Tensor, torch.Tensor | None, float] | str:
        """(the file's [1, T] waveform at 24 kHz, at 16 kHz with the SSL model (else None), each cut to
        ``crop`` seconds when given; its seconds of audio, read from its header now: a file still
        being written may have grown since it was listed), or the reason it cannot be used."""
        started = time.perf_counter()
        try:
            duration = probe(path).duration
            wav = load_audio(path)
            wav16 = load_audio(path, target_rate=SSL_SAMPLE_RATE) if self.ssl is not None else None
            if crop:
                wav = crop_or_tile(wav, max(1, round(crop * self.sample_rate)))
                wav16 = None if wav16 is None else crop_or_tile(wav16, max(1, round(crop * SSL_SAMPLE_RATE)))
            if wav16 is not None and wav16.shape[-1] < SSL_RECEPTIVE_FIELD:
                return (f"shorter than the SSL model's receptive field ({wav16.shape[-1]} < {SSL_RECEPTIVE_FIELD} "
                        "samples at 16 kHz)")
            return wav, wav16, duration
        except AudioError as err:
            return str(err)
        except Exception as err:  # noqa: BLE001 - a file changing while read must not stop the others
            return f"cannot be read ({type(err).__name__}: {err})"
        finally:
            self.add_time("decode", time.perf_counter() - started)

    def _probe(self, path: str, crop: float | None) -> tuple[int, float] | str:
        """(samples at 24 kHz to encode, seconds of audio) from the header, or the reason it cannot be used."""
        if Path(path).suffix.lower() not in AUDIO_EXTENSIONS:
            return f"unknown extension {Path(path).suffix or '(none)'!r}; audio files end in {', '.join(AUDIO_EXTENSIONS)}"
        try:
            info = probe(path)
        except AudioError as err:
            return str(err)
        except Exception as err:  # noqa: BLE001 - as in _load
            return f"cannot be read ({type(err).__name__}: {err})"
        if self.ssl is not None and info.duration > self.max_seconds:
            return f"longer than max_seconds={self.max_seconds:g} s ({info.duration:.1f} s)"
        samples = max(1, round(crop * self.sample_rate)) if crop else resampled_length(info.frames, info.sample_rate)
        return samples, info.duration

    def encode_files(self, paths: Sequence[str], batch_seconds: float,
                     crop_seconds: float | None = None) -> Iterator[list[tuple[int, Features]]]:
        """Encode files, grouped longest first into padded batches of at most ``batch_seconds`` of
        audio (0: one file at a time); yields, batch by batch, [(index in ``paths``, Features)]: first
        the files whose header cannot be used, then each batch as it is done. The next batch is
        decoded in a thread while one encodes. ``crop_seconds``: encode a fixed crop of every file
        (:func:`crop_or_tile`) instead of the whole file."""
        crop = crop_seconds or None
        budget = max(1, int(batch_seconds * self.sample_rate))
        lengths: dict[int, int] = {}
        durations: dict[int, float] = {}
        failed: list[tuple[int, Features]] = []
        for i, path in enumerate(paths):
            probed = self._probe(str(path), crop)
            if isinstance(probed, str):
                failed.append((i, Features(str(path), error=probed)))
            else:
                lengths[i], durations[i] = probed
        if failed:
            yield failed
        batches = length_batches(lengths, budget)
        if not batches:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            load = lambda batch: {i: self._load(str(paths[i]), crop) for i in batch}  # noqa: E731
            pending = pool.submit(load, batches[0])
            for k, batch in enumerate(batches):
                loaded = pending.result()
                if k + 1 < len(batches):
                    pending = pool.submit(load, batches[k + 1])
                good = [i for i in batch if not isinstance(loaded[i], str)]
                done = [(i, Features(str(paths[i]), duration=durations[i], error=loaded[i]))
                        for i in batch if isinstance(loaded[i], str)]  # the duration listed, when it fails
                if good:
                    encoded = self.encode([loaded[i][0] for i in good], budget)
                    ssl = self.encode_ssl([loaded[i][1] for i in good]) if self.ssl is not None else [None] * len(good)
                    done += [(i, Features(str(paths[i]), e.codes, e.latent, loaded[i][2], e.n_windows, ssl=layers))
                             for i, e, layers in zip(good, encoded, ssl)]
                yield done
