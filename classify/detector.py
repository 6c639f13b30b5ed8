"""The Detector: a trained model that judges new audio, scoring a file exactly as `evaluate` scores
it from a store.

    from classify.detector import Detector
    detector = Detector.load("runs/qaf")          # a run directory, a checkpoint or a bundle
    detector.score(waveform, sample_rate)         # -> the logit (higher = more bona fide)
    rows = detector.score_files(["a.flac", "b.wav"])
    explanation = detector.explain(waveform, sample_rate)

No train/serve skew: the front end is the extraction's own code (`extract.frontend`: decoding,
resampling, windowing of long files, the codec with the model's weights and bandwidth, checked by
sha256 and by the codebooks in the model), and the codes are scored by `classify.evaluate.score_split`
over `classify.data.FrameSource`, as `evaluate` scores them (the features in RAM read by the
`memory` frame reader, `classify.frames`). This module is DESIGN.md's one
exception to "classify never imports extract": it rebuilds the codec front end, and imports
`extract` lazily, inside :meth:`Detector.load` only, so that importing `classify` still loads no
codec code.

Models of the SSL variants (``ssl``, ``ssl+V``, `classify.fusion`) score the same way: the front
end also runs the frozen SSL model the training store's SSL stream was made with (found by its
sha256, `extract.frontend.ssl_front_end`) over each file, as extraction runs it (a long file in
windows, `extract.ssl.ssl_windows`), and the pairs of SSL frames and their codec frames are scored
by the same `score_split` over the same `FrameSource`.

Decisions are `classify.thresholds`; explanations (`explain`) are `classify.explain`.

Thread safety: :meth:`Detector.score`, :meth:`Detector.score_files` and :meth:`Detector.explain`
may be called from several threads at once; encoding is serialised by the front end's lock (the
codec already uses every core through torch's threads), decoding and the head run in parallel.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classify import rebuild
from classify.align import SSL_PER_PAIR
from classify.bundle import ModelFile, codec_weights_bytes, read_model
from classify.checkpoint import CheckpointError
from classify.config import TrainConfig, amp_dtype, resolve_device
from classify.data import FrameSource, SplitData
from classify.decision import PRIOR, check_prior
from classify.evaluate import apply_calibration, frame_window, score_split
from classify.explain import Explanation, explain
from classify.frames import ArrayReader
from classify.fusion import PCA_BASIS_KEY, FusedDetector, as_trained, ssl_label  # noqa: F401 - as_trained: its home was here
from classify.model import SpoofDetector
from classify.score_rows import ScoreRow
from classify.sources import model_streams
from classify.thresholds import Threshold, make_threshold
from classify.variants import needs
from store.reader import CodecInfo, FeatureStore
from store.sslstorage import SSLStorage

GROUP_FILES = 256
"""Files read ahead and grouped by length at a time (a stream is scored group by group)."""
BATCH_SECONDS = {"cpu": 0.0, "cuda": 120.0}
"""Default padded audio seconds per encoder batch. On CPUs one file at a time: about as fast as 8 s
batches there (BENCHMARKS.md section 6: 17 % more CPU seconds, 2.4x less peak memory), and a file's codes are then EnCodec's own for that file alone, whatever it is
scored with (in a padded batch, float rounding can flip a code between near-equidistant codewords)."""


def _groups(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive groups of at most ``size`` paths. A sequence is cut in order; any other iterable
    (a stream such as stdin) is read in a thread, and each group is what has arrived (at least one
    path), so that a slow stream is scored as it comes."""
    if isinstance(paths, Sequence):
        for first in range(0, len(paths), size):
            yield list(paths[first : first + size])
        return
    items: queue.Queue = queue.Queue()
    end = object()

    def feed() -> None:
        try:
            for item in paths:
                items.put(item)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            items.put(err)
        items.put(end)

    threading.Thread(target=feed, daemon=True).start()
    while True:
        item = items.get()
        group: list[str] = []
        while item is not end:
            if isinstance(item, BaseException):
                raise item
            group.append(item)
            if len(group) >= size:
                break
            try:
                item = items.get_nowait()
            except queue.Empty:
                break
        if group:
            yield group
        if item is end:
            return


class Detector:
    """A trained model with its codec front end; see the module docstring. Build with :meth:`load`."""

    def __init__(self, model: SpoofDetector | FusedDetector, front_end: Any, model_file: ModelFile,
                 threshold: Threshold, device: torch.device, batch_seconds: float, eval_crop: float | None,
                 codec_source: str, ssl_source: str = "") -> None:
        self.model = model.eval()
        self.front_end = front_end
        self.model_file = model_file
        self.config = TrainConfig(**model_file.state["config"])
        self.codec = CodecInfo(**model_file.state["codec"])
        self.threshold = threshold
        self.prior = PRIOR
        """P(bona fide) of the probabilities (`classify.decision`); set by :meth:`load`."""
        self.device = device
        self.dtype = amp_dtype(self.config, device)
        self.batch_seconds = batch_seconds
        self.eval_crop = eval_crop
        self.codec_source = codec_source
        self.ssl_source = ssl_source
        self.window, self.frame_budget = frame_window(self.config, self.codec.frame_rate)
        self.timings = front_end.timings
        """Seconds spent so far in "decode" (reading, resampling), "codec" (encoding), "ssl" (the SSL
        model, SSL variants only) and "head"."""
        front_end.add_time("head", 0.0)

    @classmethod
    def load(cls, path: str | Path, *, codec_weights: str | Path | None = None, device: str = "auto",
             threshold: str | float = "eer", batch_seconds: float | None = None,
             eval_crop: float | None = None, download: bool = True,
             ssl_weights: str | Path | None = None, prior: float = PRIOR) -> Detector:
        """Load a run directory (its best.pt), a checkpoint or a bundle (`pipeline export-model`) and
        rebuild the codec it was trained with (see `classify.bundle.codec_weights_bytes` for where the
        weights are looked for; ``codec_weights``: a file to use instead) and, for the SSL variants,
        the SSL model (`extract.frontend.ssl_front_end`; ``ssl_weights``: a file to use instead).

        ``threshold``: ``eer``, ``bayes``, ``prior``, ``mindcf``, ``far:R`` or a raw-score value
        (:func:`make_threshold`); ``prior``: P(bona fide) of the probabilities and of ``prior``;
        ``batch_seconds``: padded audio per encoder batch (default: :data:`BATCH_SECONDS`; 0: one file
        at a time); ``eval_crop``: score the first ``eval_crop`` seconds of
        every file (shorter ones tiled) instead of the whole file; ``download``: allow fetching the
        pretrained codec from EnCodec's URL (and pretrained SSL weights from torchaudio's). Raises
        CheckpointError / WeightsError / SSLWeightsError (ValueErrors) naming the file and the problem."""
        from extract import frontend  # the Detector's one import of extract (see the module docstring)  # noqa: PLC0415
        from extract.codec import pretrained_file  # noqa: PLC0415

        if eval_crop is not None and not eval_crop > 0:
            raise ValueError(f"eval_crop must be > 0 seconds, got {eval_crop}")
        if batch_seconds is not None and batch_seconds < 0:
            raise ValueError(f"batch_seconds must be 0 (one file at a time) or more, got {batch_seconds}")
        model_file = read_model(path)
        state = model_file.state
        codec = CodecInfo(**state["codec"])
        data, where = codec_weights_bytes(model_file, codec_weights,
                                          lambda fetch: pretrained_file(download=fetch and download))
        codec_model = frontend.build_codec(data, codec.bandwidth, codec.n_q, where)
        codebooks = torch.from_numpy(frontend.codec_codebooks(codec_model, codec.n_q))
        expected = (codec.n_q, codec.codebook_size, codec.dim)
        if tuple(codebooks.shape) != expected:
            raise CheckpointError(f"the codec from {where} has codebooks {tuple(codebooks.shape)}, the model expects "
                                  f"{expected}")
        model = rebuild.build(state["config"], codebooks, state.get("ssl"), state["model"], where=f"{model_file.path} "
                              f"(codec from {where})", pca=_training_store_pca(model_file))
        torch_device = resolve_device(device)
        model.to(torch_device)
        ssl, ssl_where = None, ""
        if isinstance(model, FusedDetector):
            ssl, ssl_where = frontend.ssl_front_end(state["ssl"], ssl_weights, str(torch_device), download)
        extraction = state.get("store", {}).get("extraction", {})
        uses = needs(state["config"]["variant"])  # the variant's records say which streams it reads
        front_end = frontend.FrontEnd(codec_model, codec.bandwidth, device=str(torch_device), latent=uses.reads("latent"),
                                      energy=uses.reads("energy"),
                                      window_seconds=extraction.get("window_seconds", frontend.WINDOW_SECONDS),
                                      min_batch_seconds=extraction.get("min_batch_seconds", frontend.MIN_BATCH_SECONDS),
                                      ssl=ssl, max_seconds=extraction.get("max_seconds", 3600.0))
        if batch_seconds is None:
            batch_seconds = BATCH_SECONDS["cuda" if torch_device.type == "cuda" else "cpu"]
        detector = cls(model, front_end, model_file, make_threshold(threshold, model_file.calibration, prior),
                       torch_device, batch_seconds, eval_crop, where, ssl_where)
        detector.prior = check_prior(prior)
        return detector  # noqa: RET504

    # -- what the model is --------------------------------------------------------------------

    @property
    def codec_label(self) -> str:
        """The label of the codec weights (UNTRAINED for the offline codec): name it with every score."""
        return self.codec.weights_label

    @property
    def weights_label(self) -> str:
        """The codec weights' label, and the SSL weights' for the SSL variants (each row names them)."""
        return self.codec_label + (f"; SSL weights: {self.ssl_label}" if self.ssl_label else "")

    @property
    def ssl_label(self) -> str:
        """The SSL weights' label and layers ("" for the codec variants): name it with every score too."""
        return ssl_label(self.model)

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The model's calibration record (`classify.calibration`), or None."""
        return self.model_file.calibration

    def describe(self) -> dict[str, Any]:
        """What scores come from, for a results file's metadata."""
        return {"model": str(self.model_file.path), "model_kind": self.model_file.kind,
                "variant": self.config.variant, "head": self.config.head,
                "codec_weights": {"label": self.codec_label, "sha256": self.codec.weights_sha256,
                                  "bandwidth": self.codec.bandwidth, "n_q": self.codec.n_q,
                                  "found_in": self.codec_source},
                "ssl_weights": ({"label": self.ssl_label, "sha256": self.model.ssl_source["weights"]["sha256"],
                                 "found_in": self.ssl_source} if self.ssl_label else None),
                "calibration": self.calibration, "threshold": self.threshold.description,
                "eval_crop_seconds": self.eval_crop, "batch_seconds": self.batch_seconds,
                "max_eval_seconds": self.config.max_eval_seconds, "device": str(self.device),
                "model_provenance": self.model_file.state.get("provenance", {})}

    def llr(self, score: float) -> float | None:
        """The calibrated log-likelihood ratio of a raw score, or None without calibration."""
        calibration = self.calibration
        if not calibration:
            return None
        return float(apply_calibration(calibration["calibration"], np.array([score]))[0])

    # -- scoring ------------------------------------------------------------------------------

    def score_features(self, features: list[Any], model: SpoofDetector | FusedDetector | None = None) -> np.ndarray:
        """Logits [N] of N files' features (`extract.frontend.Features` from ``front_end.encode_files``),
        scored as evaluate scores a store's utterances (by ``model``: default the Detector's own): the
        same streams, through readers of the features in RAM (`classify.frames`)."""
        model = self.model if model is None else model
        started = time.perf_counter()
        source, split = self.features_source(features)
        logits = score_split(model, source, split, self.window, self.frame_budget, self.device, self.dtype)
        self.front_end.add_time("head", time.perf_counter() - started)
        return logits

    def features_source(self, features: list[Any]) -> tuple[FrameSource, SplitData]:
        """A FrameSource over N files' features in RAM (readers of `classify.frames`) with the model's
        streams, and the split of all N: what evaluation reads from a store, for new audio."""
        codes, stream, ssl = model_streams(self.model)
        source = FrameSource.of(
            codes=ArrayReader([f.codes for f in features]) if codes else None,
            latent=ArrayReader([f.latent for f in features], name=stream) if stream else None,
            ssl=ArrayReader([self.model.ssl_as_trained(f.ssl[:, self.model.layer_index]) for f in features],
                            name="ssl") if ssl else None)
        n = len(features)
        lengths = np.array([f.codes.shape[0] for f in features], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        return source, SplitData("files", [f.path for f in features], starts, lengths, np.zeros(n, bool), ["-"] * n,
                                 ["-"] * n, 0, np.arange(n))

    def _too_short(self, features: Any) -> str:
        """Why a file's features cannot be scored by an SSL variant ("" when they can)."""
        if isinstance(self.model, FusedDetector) and features.ssl.shape[0] < SSL_PER_PAIR:
            return (f"too short for the SSL variants: {features.ssl.shape[0]} SSL frame(s), at least {SSL_PER_PAIR} "
                    "(40 ms) needed")
        return ""

    def _row(self, path: str, score: float, duration: float | None) -> ScoreRow:
        llr = self.llr(score)
        return ScoreRow(path, score, llr, self.threshold.decide(score, llr), duration)

    def _encode_waveform(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> tuple[Any, torch.Tensor]:
        from extract.frontend import Features, crop_or_tile  # noqa: PLC0415
        from extract.ssl import SSL_RECEPTIVE_FIELD, SSL_SAMPLE_RATE  # noqa: PLC0415

        started = time.perf_counter()
        wav = self.front_end.prepare(waveform, sample_rate)
        if self.eval_crop:
            wav = crop_or_tile(wav, max(1, round(self.eval_crop * self.front_end.sample_rate)))
        self.front_end.add_time("decode", time.perf_counter() - started)
        budget = max(1, int(self.batch_seconds * self.front_end.sample_rate))
        encoded = self.front_end.encode([wav], budget)[0]
        duration = torch.as_tensor(waveform).shape[-1] / sample_rate
        layers = None
        if self.front_end.ssl is not None:
            wav16 = self.front_end.prepare(waveform, sample_rate, SSL_SAMPLE_RATE)
            if self.eval_crop:
                wav16 = crop_or_tile(wav16, max(1, round(self.eval_crop * SSL_SAMPLE_RATE)))
            if wav16.shape[-1] < SSL_RECEPTIVE_FIELD:
                raise ValueError(f"waveform shorter than the SSL model's receptive field ({wav16.shape[-1]} < "
                                 f"{SSL_RECEPTIVE_FIELD} samples at 16 kHz)")
            layers = self.front_end.encode_ssl([wav16])[0]
        features = Features("<waveform>", encoded.codes, encoded.latent, duration, encoded.n_windows, ssl=layers)
        if self._too_short(features):
            raise ValueError(f"waveform {self._too_short(features)}")
        return features, wav

    def score(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> float:
        """The model's logit (higher = more bona fide) for a waveform: float samples in [-1, 1], shape
        [samples] or [channels, samples], at any sample rate (converted as a decoded file is).
        ValueError for an empty, integer or non-finite waveform."""
        features, _ = self._encode_waveform(waveform, sample_rate)
        return float(self.score_features([features])[0])

    def iter_scores(self, paths: Iterable[str | Path]) -> Iterator[tuple[int, ScoreRow]]:
        """(index, row) for every path, in the order they are done (not the input order): paths are
        taken in groups of up to GROUP_FILES, each encoded in length-sorted batches of
        ``batch_seconds`` and scored batch by batch. A file that cannot be scored gets a row with
        ``error``; the others go on."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        offset = 0
        for group in _groups(paths if isinstance(paths, Sequence) else (str(p) for p in paths), GROUP_FILES):
            group = [str(p) for p in group]
            for batch in self.front_end.encode_files(group, self.batch_seconds, self.eval_crop):
                for _, f in batch:
                    if not f.error and self._too_short(f):
                        f.error = self._too_short(f)
                ok = [(i, f) for i, f in batch if not f.error]
                for i, f in batch:
                    if f.error:
                        yield offset + i, ScoreRow(f.path, duration=f.duration, error=f.error)
                if ok:
                    logits = self.score_features([f for _, f in ok])
                    for (i, f), logit in zip(ok, logits.tolist()):
                        yield offset + i, self._row(f.path, logit, f.duration)
            offset += len(group)

    def score_files(self, paths: Iterable[str | Path]) -> list[ScoreRow]:
        """One ScoreRow per path, in the input order (see :meth:`iter_scores`)."""
        rows = dict(self.iter_scores(paths))
        return [rows[i] for i in range(len(rows))]

    # -- explaining ---------------------------------------------------------------------------

    def explain(self, waveform: np.ndarray | torch.Tensor, sample_rate: int, window_seconds: float = 0.5,
                hop_seconds: float | None = None) -> Explanation:
        """Each quantizer level's contribution and a score over time, by occlusion (`classify.explain`):
        windows of ``window_seconds`` every ``hop_seconds`` (default: half a window). The explanation's
        score is :meth:`score`'s (the same scoring)."""
        if not window_seconds > 0 or (hop_seconds is not None and not hop_seconds > 0):
            raise ValueError("window_seconds and hop_seconds must be > 0")
        features, wav = self._encode_waveform(waveform, sample_rate)
        return explain(self, features, wav, window_seconds, hop_seconds)

    def explain_file(self, path: str | Path, **kwargs: Any) -> Explanation:
        """:meth:`explain` of an audio file, decoded as every file is (AudioError for a bad one)."""
        from extract.audio import load_audio  # noqa: PLC0415

        wav = load_audio(path)
        return self.explain(wav, self.front_end.sample_rate, **kwargs)


def _training_store_pca(model_file: ModelFile) -> tuple[np.ndarray, np.ndarray] | None:
    """For a ``pca:K`` SSL model saved before models carried their basis: its training store's basis
    (None, with a warning, when that store cannot be read: new audio is then scored on unprojected
    frames, as such models always were). None for every other model."""
    state = model_file.state
    if not SSLStorage.from_source(state.get("ssl")).components or PCA_BASIS_KEY in state["model"]:
        return None
    url = state.get("store", {}).get("url")
    try:
        pca = rebuild.store_pca(state["config"], FeatureStore(url))
        why = "" if pca is not None else "it has no pca:K SSL stream"
    except Exception as err:  # noqa: BLE001 - any failure: score as before, and say so
        pca, why = None, f"{type(err).__name__}: {err}"
    if pca is None:
        warnings.warn(f"{model_file.path}: a model of a pca:K SSL stream saved without its basis, and its training "
                      f"store {url} cannot give it ({why}); new audio is scored on unprojected SSL frames", stacklevel=3)
    return pca
