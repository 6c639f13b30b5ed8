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
over `classify.data.eval_batches`, the functions `evaluate` uses. This module is DESIGN.md's one
exception to "classify never imports extract": it rebuilds the codec front end, and imports
`extract` lazily, inside :meth:`Detector.load` only, so that importing `classify` still loads no
codec code.

Models of the SSL variants (``ssl``, ``ssl+V``, `classify.fusion`) score the same way: the front
end also runs the frozen SSL model the training store's SSL stream was made with (found by its
sha256, `extract.frontend.ssl_front_end`) over each whole file, and the pairs of SSL frames and
their codec frames are scored by the same `score_split` over `classify.ssldata.SSLSource`.

Thread safety: :meth:`Detector.score`, :meth:`Detector.score_files` and :meth:`Detector.explain`
may be called from several threads at once; encoding is serialised by the front end's lock (the
codec already uses every core through torch's threads), decoding and the head run in parallel.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classify.align import SSL_PER_PAIR
from classify.bundle import ModelFile, codec_weights_bytes, read_model
from classify.checkpoint import CheckpointError
from classify.config import TrainConfig, amp_dtype, resolve_device
from classify.data import FrameSource, SplitData
from classify.decision import PRIOR, check_prior, llr_threshold, parse
from classify.evaluate import apply_calibration, frame_window, score_split
from classify.explain import occlusion, window_starts
from classify.fusion import FusedDetector, fused_detector, saved_config, ssl_label
from classify.model import SpoofDetector, build_model
from classify.score_rows import ScoreRow
from classify.ssldata import SSLFrames, SSLSource, SSLSplit
from classify.variants import split_ssl
from store.reader import CodecInfo

GROUP_FILES = 256
"""Files read ahead and grouped by length at a time (a stream is scored group by group)."""
BATCH_SECONDS = {"cpu": 0.0, "cuda": 120.0}
"""Default padded audio seconds per encoder batch. On CPUs one file at a time: about as fast as 8 s
batches there (BENCHMARKS.md section 6: 17 % more CPU seconds, 2.4x less peak memory), and a file's codes are then EnCodec's own for that file alone, whatever it is
scored with (in a padded batch, float rounding can flip a code between near-equidistant codewords)."""


@dataclass(frozen=True)
class Threshold:
    """The decision threshold: bona fide when the value ``on`` ("llr" or "score") is >= ``value``;
    ``value`` None: no decision (the model lacks the calibration the threshold needs)."""

    kind: str
    value: float | None
    on: str
    description: str

    def decide(self, score: float, llr: float | None) -> str:
        value = llr if self.on == "llr" else score
        if self.value is None or value is None:
            return ""
        return "bonafide" if value >= self.value else "spoof"


def make_threshold(spec: str | float, calibration: dict[str, Any] | None, prior: float = PRIOR) -> Threshold:
    """``eer``: the dev EER threshold of the calibrated score (LLR); ``bayes``: the Bayes threshold
    of the LLR for the ASVspoof5 costs; a number: a threshold of the raw score; ``prior``,
    ``mindcf``, ``far:R``: the operating points of `classify.decision` (``prior``: P(bona fide)).
    The named ones come from the model's calibration record: a model without one gets no decision
    (a Threshold whose value is None, whose description says why). ValueError for anything else."""
    if isinstance(spec, str) and (spec in ("prior", "mindcf") or spec.startswith("far:")):
        value, description = llr_threshold(spec, calibration, check_prior(prior))
        return Threshold(spec, value, "llr", description)
    if not isinstance(spec, str) or spec not in ("eer", "bayes"):
        try:
            value = float(spec)
        except (TypeError, ValueError):
            parse(str(spec))  # the error names every choice
            raise
        return Threshold("value", value, "score", f"raw score >= {value:g}")
    thresholds = (calibration or {}).get("thresholds")
    if not thresholds:
        return Threshold(spec, None, "llr", f"none: --threshold {spec} needs the model's dev calibration, which "
                                            "this model lacks (last.pt, or trained before calibrations were saved); "
                                            "give a raw-score threshold instead")
    if spec == "eer":
        return Threshold("eer", thresholds["eer_llr"], "llr",
                         f"LLR >= {thresholds['eer_llr']:.4g}: the dev EER threshold of the calibrated score "
                         f"(raw score {thresholds['eer_score']:.4g}; dev EER {100 * thresholds['dev_eer']:.2f} %)")
    return Threshold("bayes", thresholds["bayes_llr"], "llr",
                     f"LLR >= {thresholds['bayes_llr']:.4g}: the Bayes threshold -ln(Cmiss (1 - Pspoof) / "
                     "(Cfa Pspoof)) for Pspoof 0.05, Cmiss 1, Cfa 10")


@dataclass(frozen=True)
class Explanation:
    """:meth:`Detector.explain`'s result. ``levels`` [Q]: score change when level q (1-based index
    q + 1) is occluded by its mean codeword (empty for the `latent` variant); ``times`` [W]: centres
    (seconds) of the occluded windows; ``over_time`` [W]: score change when that window is occluded;
    ``waveform`` [T]: the mono 24 kHz audio the codec saw. Change = score - occluded score: positive
    means that part pushed the score towards bona fide."""

    score: float
    llr: float | None
    decision: str
    levels: np.ndarray
    times: np.ndarray
    over_time: np.ndarray
    window_seconds: float
    hop_seconds: float
    waveform: np.ndarray
    sample_rate: int
    codec_weights: str
    method: str


class _ArraySource(FrameSource):
    """A FrameSource over codes [F, Q] (and latent [F, D]) already in RAM, not read from a store."""

    def __init__(self, codes: np.ndarray, latent: np.ndarray | None) -> None:  # no store, nothing to check
        self.codes, self.latent, self._lazy_latent = codes, latent, None


class _ArraySSLFrames(SSLFrames):
    """SSLFrames over the SSL stream's layers [F, L, H] already in RAM (the model's layers chosen)."""

    def __init__(self, frames: np.ndarray, layer_index: np.ndarray) -> None:  # no store
        self.layer_index, self.lazy = layer_index, None
        self.ram = frames if layer_index.size == frames.shape[1] else frames[:, layer_index]


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
        model = _rebuild(model_file, codebooks, where)
        torch_device = resolve_device(device)
        model.to(torch_device)
        ssl, ssl_where = None, ""
        if isinstance(model, FusedDetector):
            ssl, ssl_where = frontend.ssl_front_end(state["ssl"], ssl_weights, str(torch_device), download)
        extraction = state.get("store", {}).get("extraction", {})
        stream = _stream(model)
        front_end = frontend.FrontEnd(codec_model, codec.bandwidth, device=str(torch_device), latent=stream == "latent",
                                      energy=stream == "energy",
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
        scored as evaluate scores a store's utterances (by ``model``: default the Detector's own)."""
        model = self.model if model is None else model
        started = time.perf_counter()
        lengths = np.array([f.codes.shape[0] for f in features], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        latent = np.concatenate([f.latent for f in features]) if _needs_latent(self.model) else None
        source = _ArraySource(np.concatenate([f.codes for f in features]), latent)
        split = SplitData("files", [f.path for f in features], starts, lengths, np.zeros(len(features), bool),
                          [], [], 0)
        if isinstance(self.model, FusedDetector):
            source, split = self._ssl_split(features, source, split)
        logits = score_split(model, source, split, self.window, self.frame_budget, self.device, self.dtype)
        self.front_end.add_time("head", time.perf_counter() - started)
        return logits

    def _ssl_split(self, features: list[Any], codec: FrameSource, split: SplitData) -> tuple[SSLSource, SSLSplit]:
        """The SSLSource and SSLSplit of N files' features, as `classify.ssldata.SSLSource.split` makes
        them for a store's utterances (every file's SSL stream starts at its frame 0: never cropped)."""
        counts = np.array([f.ssl.shape[0] for f in features], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        frames = _ArraySSLFrames(np.concatenate([f.ssl for f in features]), self.model.layer_index)
        source = SSLSource(None, "files", frames, codec if self.model.weighting is not None else None, offsets,
                           np.zeros(len(features), np.int64))
        fields = {f.name: getattr(split, f.name) for f in dataclasses.fields(SplitData)}
        return source, SSLSplit(**fields, rows=np.arange(len(features)), ssl_first=offsets[:-1],
                                pairs=counts // SSL_PER_PAIR, codec_base=split.starts,
                                codec_last=split.starts + split.lengths - 1)

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
        windows of ``window_seconds`` every ``hop_seconds`` (default: half a window)."""
        if not window_seconds > 0 or (hop_seconds is not None and not hop_seconds > 0):
            raise ValueError("window_seconds and hop_seconds must be > 0")
        features, wav = self._encode_waveform(waveform, sample_rate)
        if isinstance(self.model, FusedDetector):
            return self._explain_fused(features, wav, window_seconds, hop_seconds)
        rate = self.codec.frame_rate
        window = max(1, round(window_seconds * rate))
        hop = max(1, round((hop_seconds or window_seconds / 2) * rate))
        result = occlusion(self.model, features.codes, features.latent, self.window, window, hop, self.frame_budget,
                           self.device)
        llr = self.llr(result.score)
        times = (result.starts + min(window, features.codes.shape[0]) / 2) / rate
        return Explanation(
            score=result.score, llr=llr, decision=self.threshold.decide(result.score, llr), levels=result.levels,
            times=times, over_time=result.over_time, window_seconds=window / rate, hop_seconds=hop / rate,
            waveform=wav[0].numpy(), sample_rate=self.front_end.sample_rate, codec_weights=self.codec_label,
            method=(f"occlusion: a level's embeddings, or every level in a {window / rate:.2f} s window every "
                    f"{hop / rate:.2f} s, replaced by the mean codeword; change = score - occluded score"))

    def _explain_fused(self, features: Any, wav: torch.Tensor, window_seconds: float,
                       hop_seconds: float | None) -> Explanation:
        """:meth:`explain` for the SSL variants, through :meth:`score_features` (evaluate's scoring):
        a codec level is occluded as for the codec variants (its rows of the model's tables set to
        the level's mean codeword, in a copy of the model); a window is occluded by deleting it from
        both streams (whole 40 ms pairs: 2 SSL frames and their 3 codec frames), the rest scored as
        one file. The SSL stream has no neutral value to put in a window's place; deletion needs none."""
        import copy  # noqa: PLC0415

        from classify.align import CODEC_PER_PAIR, PAIR_SECONDS  # noqa: PLC0415

        score = float(self.score_features([features])[0])
        weighting = self.model.weighting
        levels = np.empty(0)
        if weighting is not None and weighting.spec.stream is None:
            occluded = copy.deepcopy(self.model)  # one copy; each level's rows are set, scored and restored
            table = occluded.weighting.table.view(weighting.n_q, weighting.n_codes, weighting.dim)
            changed = []
            for q in range(weighting.n_q):
                with torch.no_grad():
                    rows = table[q].clone()
                    table[q] = rows.mean(dim=0)
                changed.append(float(self.score_features([features], occluded)[0]))
                with torch.no_grad():
                    table[q] = rows
            levels = score - np.array(changed)
        pairs = features.ssl.shape[0] // SSL_PER_PAIR
        window = min(max(1, round(window_seconds / PAIR_SECONDS)), pairs - 1)  # at least one pair stays
        hop = max(1, round((hop_seconds or window_seconds / 2) / PAIR_SECONDS))
        starts = window_starts(pairs, window, hop) if window > 0 else np.empty(0, np.int64)
        cut = []
        for p0 in starts.tolist():
            p1 = p0 + window
            keep = lambda a, per: None if a is None else np.concatenate([a[: p0 * per], a[p1 * per :]])  # noqa: B023, E731
            cut.append(dataclasses.replace(features, codes=keep(features.codes, CODEC_PER_PAIR),
                                           latent=keep(features.latent, CODEC_PER_PAIR), ssl=keep(features.ssl, SSL_PER_PAIR)))
        over_time = score - self.score_features(cut) if cut else np.empty(0)
        llr = self.llr(score)
        return Explanation(
            score=score, llr=llr, decision=self.threshold.decide(score, llr), levels=levels,
            times=(starts + window / 2) * PAIR_SECONDS, over_time=np.asarray(over_time, dtype=np.float64),
            window_seconds=window * PAIR_SECONDS, hop_seconds=hop * PAIR_SECONDS, waveform=wav[0].numpy(),
            sample_rate=self.front_end.sample_rate, codec_weights=self.weights_label,
            method=(f"occlusion: a codec level's embeddings replaced by its mean codeword; a {window * PAIR_SECONDS:.2f} s "
                    f"window every {hop * PAIR_SECONDS:.2f} s deleted from both streams (the SSL stream has no neutral "
                    "value); change = score - occluded score"))

    def explain_file(self, path: str | Path, **kwargs: Any) -> Explanation:
        """:meth:`explain` of an audio file, decoded as every file is (AudioError for a bad one)."""
        from extract.audio import load_audio  # noqa: PLC0415

        wav = load_audio(path)
        return self.explain(wav, self.front_end.sample_rate, **kwargs)


def _needs_latent(model: SpoofDetector | FusedDetector) -> bool:
    """True when the model reads a continuous stream (`latent` or `energy`, carried as the latent)."""
    return _stream(model) is not None


def _stream(model: SpoofDetector | FusedDetector) -> str | None:
    """The continuous stream the model's weighting reads instead of the codes (`latent`, `energy`), or None."""
    if model.weighting is None or model.weighting.spec.stream is None:
        return None
    return model.weighting.spec.stream.name


def _rebuild(model_file: ModelFile, codebooks: torch.Tensor, where: str) -> SpoofDetector | FusedDetector:
    """The trained model over the codec's ``codebooks`` [Q, K, D] (and, SSL variants, the SSL stream
    the checkpoint records). Refuses (CheckpointError) when the codec's codebooks are not those the
    model was trained on (its fixed tables say which)."""
    state = model_file.state
    config = state["config"]
    codec = state["codec"]
    expected = (codec["n_q"], codec["codebook_size"], codec["dim"])
    if tuple(codebooks.shape) != expected:
        raise CheckpointError(f"the codec from {where} has codebooks {tuple(codebooks.shape)}, the model expects "
                              f"{expected}")
    if split_ssl(config["variant"])[0]:
        if not state.get("ssl"):
            raise CheckpointError(f"{model_file.path}: variant {config['variant']!r} needs the SSL stream's record "
                                  "(checkpoint entry 'ssl'), which this model file lacks")
        model = fused_detector(saved_config(config, state["model"]), codebooks, state["ssl"])
    else:
        model = build_model(codebooks, config["variant"], config["head"], config["tau"], config["head_kwargs"],
                            config["level_norm"])
    trained = state["model"].get("weighting.table")
    if model.weighting is not None and model.weighting.spec.kind != "trainable-tables" and trained is not None and \
            not torch.allclose(model.weighting.table, trained, rtol=1e-5, atol=1e-6):
        raise CheckpointError(f"the codec from {where} has the model's sha256 but not the codebooks its tables were "
                              f"built from ({model_file.path}); the model file is inconsistent")
    model.load_state_dict(state["model"])
    return model
