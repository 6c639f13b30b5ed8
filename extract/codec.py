"""The frozen EnCodec 24 kHz codec: where its weights come from, and how to build it.

Three sources of weights, each named in every output made with them:

* ``pretrained``: EnCodec's published checkpoint. Taken from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/encodec_24khz-d7cc33bc.th``) when it is there, else downloaded from
  EnCodec's URL; either way its sha256 must start with the 8 hex digits in the file name.
* a local file: a state dict for ``EncodecModel.encodec_model_24khz(pretrained=False)`` (a copy of the
  published checkpoint, or weights saved by an earlier extraction), loaded with weights_only=True.
  It is called pretrained EnCodec only when its sha256 starts with the published checkpoint's
  prefix; untrained weights saved by this tool stay UNTRAINED (see below); any other file is
  "EnCodec weights from FILE (not the published checkpoint)".
* ``untrained``: a seeded random encoder, variance-normalised layer by layer on the corpus's audio
  (`extract.lsuv`), whose codebooks are then initialised by k-means on the corpus's own audio, as
  EnCodec initialises its codebooks before training. For offline use and tests only: its features
  are NOT those of the real codec, and every output says so.

How untrained weights stay UNTRAINED through a file: the saved state dict carries an entry
``UNTRAINED_KEY`` in its ``_metadata`` (torch's own per-state-dict metadata, an attribute of the
OrderedDict that torch.save pickles with it and ``torch.load(weights_only=True)`` restores).
``load_state_dict`` looks up ``_metadata`` only under module names, so the file still loads, strictly,
into a plain ``EncodecModel`` with no code of this tool; `read_weights` finds the entry and keeps the
label. A dict rebuilt from the items (``dict(state)``) loses the entry: such a file is then labelled
"EnCodec weights from FILE (not the published checkpoint)", never pretrained.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from encodec import EncodecModel
from encodec.model import ROOT_URL
from fsspec.implementations.local import LocalFileSystem

from common.weights import UNTRAINED, file_sha256
from store.format import StoreFiles
from store.verify import register_codebook_reader

from .audio import CODEC_SAMPLE_RATE
from .calibration import NO_TRAIN_SPLIT, init_codebooks
from .lsuv import calibration_batch, normalise_encoder

CODEC_NAME = "encodec_24khz"
CHECKPOINT_NAME = "encodec_24khz-d7cc33bc.th"
PRETRAINED_URL = ROOT_URL + CHECKPOINT_NAME
FRAME_RATE = 75
HOP_LENGTH = 320  # samples per frame at 24 kHz
CODEBOOK_SIZE = 1024
DIM = 128
BANDWIDTHS: dict[float, int] = {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}
"""Target bandwidth (kbps) -> number of quantizer levels."""
UNTRAINED_KEY = "rvq_antispoof"
"""Key in a saved state dict's ``_metadata`` that marks the weights as this tool's untrained codec."""
UNTRAINED_KIND = "UNTRAINED EnCodec 24 kHz (random encoder, k-means codebooks; not real codec features)"


class WeightsError(ValueError):
    """The requested codec weights cannot be used."""


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of codec weights: stored with every feature store and every result."""

    source: str  # "pretrained" | "file" | "untrained"
    sha256: str
    trained: bool  # False for weights known to be untrained (made, or saved, by --weights untrained)
    origin: str  # URL, file path, or how the untrained codec was made ("seed=N, ...")

    @property
    def published(self) -> bool:
        """Whether these are EnCodec's published weights (sha256 prefix in the checkpoint's name)."""
        return self.trained and self.sha256.startswith(published_sha256_prefix())

    @property
    def label(self) -> str:
        """One line for every report, plot and score file made with these weights."""
        if not self.trained:
            kind = UNTRAINED_KIND + (f", calibrated on non-training audio ({NO_TRAIN_SPLIT})" if NO_TRAIN_SPLIT in self.origin else "")
        elif self.published:
            kind = "pretrained EnCodec 24 kHz"
        else:
            kind = f"EnCodec weights from {self.origin} (not the published checkpoint)"
        return f"{kind}, weights sha256 {self.sha256[:12]}"

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def published_sha256_prefix() -> str:
    """The 8 hex digits of the published checkpoint's sha256, from its file name (all that is known offline)."""
    return CHECKPOINT_NAME.rsplit("-", 1)[1].split(".")[0]


def n_quantizers(bandwidth: float) -> int:
    try:
        return BANDWIDTHS[float(bandwidth)]
    except KeyError:
        raise WeightsError(f"bandwidth {bandwidth} kbps is not one of EnCodec 24 kHz's: {sorted(BANDWIDTHS)}") from None


def codec_codebooks(model: EncodecModel, n_q: int) -> np.ndarray:
    """float32 [n_q, 1024, 128]: the first ``n_q`` RVQ codebooks (what a store's ``codebooks`` holds)."""
    return np.stack([layer._codebook.embed.detach().cpu().numpy() for layer in model.quantizer.vq.layers[:n_q]])


def saved_codebooks(files: StoreFiles, name: str, n_q: int) -> list[np.ndarray | None]:
    """The first ``n_q`` codebooks in a store's weights file ``name`` (None for a level it lacks),
    for `store.verify` (registered below). The file is memory-mapped when local: only the codebooks
    are read. Never executes code (weights_only=True)."""
    if isinstance(files.fs, LocalFileSystem):
        state = torch.load(files.path(name), map_location="cpu", weights_only=True, mmap=True)
    else:
        state = torch.load(io.BytesIO(files.read_bytes(name)), map_location="cpu", weights_only=True)
    keys = [f"quantizer.vq.layers.{q}._codebook.embed" for q in range(n_q)]
    return [state[key].numpy() if key in state else None for key in keys]


register_codebook_reader(CODEC_NAME, saved_codebooks)


def state_dict_bytes(model: EncodecModel, untrained_origin: str | None = None) -> bytes:
    """The model's state dict serialised by torch.save (what a weights file holds); marked as this
    tool's untrained codec, made as ``untrained_origin`` says, when that is given."""
    state = model.state_dict()
    if untrained_origin is not None:
        state._metadata[UNTRAINED_KEY] = {"trained": False, "origin": untrained_origin}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def saved_untrained_origin(state: OrderedDict) -> str | None:
    """How the untrained codec of a loaded state dict was made, or None when it carries no untrained mark."""
    mark = (getattr(state, "_metadata", None) or {}).get(UNTRAINED_KEY)
    if isinstance(mark, dict) and mark.get("trained") is False:
        return str(mark.get("origin", "unknown"))
    return None


def new_model() -> EncodecModel:
    """EnCodec 24 kHz architecture with default (random, codebooks zero) parameters, in eval mode."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        return EncodecModel.encodec_model_24khz(pretrained=False)


def read_weights(path: str | Path, source: str = "file") -> tuple[EncodecModel, bytes, WeightsInfo]:
    """Build the codec from a local state dict (never executes code: weights_only=True).

    Returns (model, the file's bytes, provenance). The provenance is honest: untrained weights saved
    by this tool stay untrained; ``source`` ("file" or "pretrained") only says where the file came
    from, and the label calls it pretrained only when its sha256 matches the published prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: codec weights file not found")
    data = path.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files  # noqa: BLE001
        raise WeightsError(f"{path}: not a loadable state dict ({type(err).__name__}: {err})") from None
    model = new_model()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise WeightsError(f"{path}: not an EnCodec 24 kHz state dict ({err})") from None
    made = saved_untrained_origin(state)
    origin = str(path.resolve()) if made is None else f"{path.resolve()} (saved untrained codec: {made})"
    return model.eval(), data, WeightsInfo(source, hashlib.sha256(data).hexdigest(), made is None, origin)


def load_weights_file(path: str | Path) -> EncodecModel:
    """The codec built from a local state dict (see `read_weights`)."""
    return read_weights(path)[0]


def pretrained_file(download: bool = True) -> Path:
    """Path of EnCodec's published checkpoint, checked against the sha256 prefix in its name.

    Looks in the torch hub cache first; downloads from EnCodec's URL only when ``download``.
    """
    dest = Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME
    expected = published_sha256_prefix()
    if not dest.is_file():
        if not download:
            raise WeightsError(f"pretrained EnCodec weights not in the torch hub cache ({dest})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(PRETRAINED_URL, str(dest), hash_prefix=expected, progress=True)
        except Exception as err:  # noqa: BLE001
            raise WeightsError(
                f"cannot download {PRETRAINED_URL} ({err}). Put the file at {dest}, pass it with "
                "--weights FILE, or use --weights untrained for an offline (untrained) codec."
            ) from None
    actual = file_sha256(dest)
    if not actual.startswith(expected):
        raise WeightsError(f"{dest}: sha256 {actual[:8]}... does not match the expected {expected}; delete it and retry")
    return dest


LSUV_SEGMENTS = 16
LSUV_SEGMENT_SECONDS = 1.0


def untrained_seconds(kmeans_frames: int, lsuv: bool = True, lsuv_seconds: float = LSUV_SEGMENTS * LSUV_SEGMENT_SECONDS) -> float:
    """Seconds of audio the untrained codec is calibrated on: enough for ``kmeans_frames`` frames,
    and for the LSUV batch."""
    return max(kmeans_frames * HOP_LENGTH / CODEC_SAMPLE_RATE, lsuv_seconds if lsuv else 0.0)


@torch.no_grad()
def build_untrained(
    audio: Sequence[torch.Tensor],
    n_q: int,
    seed: int = 0,
    kmeans_frames: int = 8192,
    kmeans_iters: int = 50,
    lsuv: bool = True,
    lsuv_seconds: float = LSUV_SEGMENTS * LSUV_SEGMENT_SECONDS,
    dataset: str = "the corpus",
    sample: str = "",
) -> tuple[EncodecModel, bytes, WeightsInfo]:
    """The untrained codec: seeded random EnCodec 24 kHz, encoder variance-normalised (LSUV, see
    `extract.lsuv`) on the first ``lsuv_seconds`` of ``audio`` cut into 1 s segments, then the first
    ``n_q`` codebooks initialised by k-means on ``kmeans_frames`` encoder frames spread evenly over
    all of ``audio``, dead codewords re-seeded (`extract.calibration.init_codebooks`).

    ``audio``: the calibration sample, clips [1, T] at 24 kHz in a fixed order (see
    `extract.calibration.draw_sample`: every clip is encoded); ``sample``: one line saying what it
    is, kept in the origin. ``lsuv=False`` gives the plain random encoder of earlier versions (same
    seed, same codebooks procedure). Built with one torch thread, so that the result is the same on
    every machine with the same versions. Returns (model, saved state dict bytes marked untrained,
    provenance).
    """
    clips = list(audio)
    if sum(wav.shape[-1] for wav in clips) == 0:
        raise WeightsError("no audio to initialise the untrained codec")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float results may depend on the thread count: keep the codec reproducible
    try:
        torch.manual_seed(seed)
        model = new_model()
        how = f"seed={seed}"
        if lsuv:
            segment = int(LSUV_SEGMENT_SECONDS * CODEC_SAMPLE_RATE)
            batch = calibration_batch(clips, max(1, round(lsuv_seconds / LSUV_SEGMENT_SECONDS)), segment)
            normalise_encoder(model.encoder, batch)
            how += f", LSUV on {batch.numel() / CODEC_SAMPLE_RATE:g} s"
        torch.manual_seed(seed)
        used = init_codebooks(model, clips, n_q, kmeans_frames, kmeans_iters)
    finally:
        torch.set_num_threads(threads)
    origin = f"{how}, k-means on {used} frames of {dataset}, dead codewords re-seeded" + (f"; {sample}" if sample else "")
    data = state_dict_bytes(model, untrained_origin=origin)
    return model.eval(), data, WeightsInfo(UNTRAINED, hashlib.sha256(data).hexdigest(), False, origin)
