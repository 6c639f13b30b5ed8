"""The frozen self-supervised (SSL) speech model of the paper's full system: WavLM, its weights, its
frames, and its layer outputs.

Architectures (:data:`ARCHITECTURES`, one registry entry each):

* ``wavlm-large``: torchaudio's WavLM Large (``torchaudio.models.wavlm_model`` with the settings of
  ``torchaudio.pipelines.WAVLM_LARGE``; 24 transformer layers of 1024 dimensions, 315.5 M
  parameters). Its input is layer-normalised per utterance, as the pipeline bundle does.
* ``wavlm-tiny``: the same front end (receptive field 400 samples, hop 320 at 16 kHz) with 4 layers
  of 32 dimensions: for tests and offline runs only, never a real SSL model.

Only the first ``max(layers)`` transformer layers are built and run: the layers after the last one
used cannot change the earlier ones' outputs, so a 12-layer stream pays for 12 of WavLM-Large's 24.

Weights, named in every output made with them (:class:`SSLWeights`):

* ``pretrained``: torchaudio's published checkpoint (``wavlm_large.pth``), from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/wavlm_large.pth``, where torchaudio's bundle caches it) or downloaded
  from torchaudio's URL. torchaudio publishes no hash for it, so none can be checked; its sha256 is
  recorded with the features.
* a local file: a state dict of the architecture (a copy of the checkpoint), loaded with
  ``weights_only=True``.
* ``untrained``: seeded random weights (``torch.manual_seed(seed)``, then the model built with the
  layers used), for offline use and tests only; every output says UNTRAINED.

Frames: SSL frame u of an utterance covers 16 kHz samples [320 u, 320 u + 400), i.e. seconds
[0.02 u, 0.02 u + 0.025), 50 frames per second. Layer l (1-based) is the output of transformer
layer l (the convolutional front end's output is not a layer), as in the AttM release.

Long utterances (:func:`ssl_windows`): the transformer's attention costs memory quadratic in the
frames (WavLM-Large: 16 heads x T^2 floats per layer: 185 MB at 34 s, 14 GB at 5 min). An utterance
of at most ``SSL_WINDOW_SECONDS + 2 * SSL_CONTEXT_SECONDS`` (34 s; anti-spoofing corpora's
utterances last a few seconds) runs in one pass. A longer one runs in windows of 30 s of frames,
each seen with 2 s of the utterance on either side, and keeps each window's own frames: the
attention's memory stays that of a 34 s pass whatever the length (the features themselves grow
linearly: 12 layers of 1,024 float32 are 2.4 MB per second).
The convolutional front end is exact across windows (each starts on the 320-sample frame grid and
the waveform is normalised over the whole utterance first); the transformer's outputs are those of
the window with its context, not of the whole utterance.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchaudio.models import Wav2Vec2Model, wavlm_model

from common.selection import format_layers, parse_layers  # noqa: F401 - the selections of --ssl-layers, read here
from common.weights import UNTRAINED, WeightSource, file_sha256

SSL_SAMPLE_RATE = 16_000
SSL_HOP = 320
"""Samples at 16 kHz between SSL frames (20 ms)."""
SSL_RECEPTIVE_FIELD = 400
"""Samples at 16 kHz one SSL frame's front end sees (25 ms)."""
SSL_FRAME_RATE = SSL_SAMPLE_RATE / SSL_HOP  # 50
TORCHAUDIO_MODELS_URL = "https://download.pytorch.org/torchaudio/models/"
_CONV = [(512, 10, 5), (512, 3, 2), (512, 3, 2), (512, 3, 2), (512, 3, 2), (512, 2, 2), (512, 2, 2)]


class SSLWeightsError(ValueError):
    """The requested SSL model or weights cannot be used."""


@dataclass(frozen=True)
class SSLArchitecture:
    """One SSL model: ``params`` are `torchaudio.models.wavlm_model`'s arguments with all its layers;
    ``checkpoint``: the file name torchaudio publishes (None: no pretrained weights exist);
    ``normalize_waveform``: layer-normalise each utterance's samples first; ``test_only``: never a
    real model (labelled so)."""

    name: str
    title: str
    params: dict = field(repr=False)
    checkpoint: str | None
    normalize_waveform: bool
    test_only: bool = False

    @property
    def num_layers(self) -> int:
        return int(self.params["encoder_num_layers"])

    @property
    def hidden(self) -> int:
        return int(self.params["encoder_embed_dim"])


_LARGE = dict(
    extractor_mode="layer_norm", extractor_conv_layer_config=_CONV, extractor_conv_bias=False,
    encoder_embed_dim=1024, encoder_projection_dropout=0.1, encoder_pos_conv_kernel=128, encoder_pos_conv_groups=16,
    encoder_num_layers=24, encoder_num_heads=16, encoder_num_buckets=320, encoder_max_distance=800,
    encoder_attention_dropout=0.1, encoder_ff_interm_features=4096, encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.1, encoder_layer_norm_first=True, encoder_layer_drop=0.05, aux_num_out=None,
)
_TINY = dict(
    _LARGE, extractor_conv_layer_config=[(32, k, s) for _, k, s in _CONV], encoder_embed_dim=32,
    encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=4, encoder_num_heads=2,
    encoder_num_buckets=32, encoder_max_distance=64, encoder_ff_interm_features=64,
)
ARCHITECTURES: dict[str, SSLArchitecture] = {
    "wavlm-large": SSLArchitecture("wavlm-large", "WavLM-Large", _LARGE, "wavlm_large.pth", True),
    "wavlm-tiny": SSLArchitecture("wavlm-tiny", "WavLM-tiny (TEST architecture, 4 x 32)", _TINY,
                                  "wavlm_tiny_test.pth", True, test_only=True),
}


def architecture(name: str) -> SSLArchitecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise SSLWeightsError(f"unknown SSL model {name!r}; valid choices: {', '.join(ARCHITECTURES)}") from None


def ssl_frames(n_samples: int) -> int:
    """SSL frames of ``n_samples`` 16 kHz samples: the front end's convolutions, each
    floor((n - kernel) / stride) + 1 (0 when shorter than the 400-sample receptive field)."""
    n = int(n_samples)
    for _, kernel, stride in _CONV:
        if n < kernel:
            return 0
        n = (n - kernel) // stride + 1
    return n


SSL_WINDOW_SECONDS = 30.0
"""Frames an utterance's windows keep each (:func:`ssl_windows`), in seconds."""
SSL_CONTEXT_SECONDS = 2.0
"""Audio each window also sees on either side of its frames, in seconds."""


def ssl_windows(n_samples: int, window_seconds: float = SSL_WINDOW_SECONDS,
                context_seconds: float = SSL_CONTEXT_SECONDS) -> list[tuple[int, int, int, int]]:
    """How an utterance of ``n_samples`` 16 kHz samples is run: (first sample, end sample, first
    kept frame of the window's output, kept frames) per window, in order; the kept frames tile the
    utterance's :func:`ssl_frames` exactly. One window (the whole utterance) when its frames number at
    most window + 2 context; otherwise window k keeps frames [k W, (k + 1) W) and sees the samples of
    frames [k W - C, (k + 1) W + C) (clipped to the utterance), each window starting on the frame grid.
    ``window_seconds=math.inf``: always one pass."""
    total = ssl_frames(n_samples)
    if math.isinf(window_seconds):  # never in windows: the whole utterance in one pass
        return [(0, int(n_samples), 0, total)]
    window = max(1, int(round(window_seconds * SSL_FRAME_RATE)))
    context = max(0, int(round(context_seconds * SSL_FRAME_RATE)))
    if total <= window + 2 * context:
        return [(0, int(n_samples), 0, total)]
    out = []
    for first in range(0, total, window):
        keep = min(window, total - first)
        seen_first = max(0, first - context)
        seen_last = min(total - 1, first + keep - 1 + context)
        out.append((seen_first * SSL_HOP, seen_last * SSL_HOP + SSL_RECEPTIVE_FIELD, first - seen_first, keep))
    return out


def recorded_windows(source: dict) -> tuple[float, float]:
    """(window_seconds, context_seconds) an SSL stream record ``source`` was extracted with; streams
    made before long utterances ran in windows record none: they ran every utterance whole, which
    equals the default windows for any utterance up to 34 s."""
    return (source.get("window_seconds", SSL_WINDOW_SECONDS), source.get("context_seconds", SSL_CONTEXT_SECONDS))


CROP_GRID = 2 * SSL_HOP
"""Crop starts are multiples of 640 samples at 16 kHz (40 ms): a whole number of SSL frames (2) and
of codec frames (3), so that both streams' frames of a crop start on their own grids."""


def crop_start(n_samples: int, crop_samples: int) -> int:
    """First 16 kHz sample of the fixed crop of an utterance of ``n_samples``: the centre
    ``crop_samples``, its start rounded down to the 40 ms grid (0 when the utterance is shorter)."""
    if n_samples <= crop_samples:
        return 0
    return ((n_samples - crop_samples) // 2) // CROP_GRID * CROP_GRID


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and values, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class SSLWeights:
    """Provenance of SSL weights: ``source`` pretrained | file | untrained; ``origin`` the path or
    ``seed=N``; ``sha256`` of the file (or, untrained, of the built state: :func:`state_sha256`)."""

    model: str
    source: str
    sha256: str
    origin: str
    seed: int = 0

    @property
    def trained(self) -> bool:
        return self.source != UNTRAINED and not architecture(self.model).test_only

    @property
    def label(self) -> str:
        arch = architecture(self.model)
        if self.source == UNTRAINED:
            kind = f"UNTRAINED {arch.title} (seeded random weights; not real SSL features)"
        elif arch.test_only:
            kind = f"{arch.title} weights from {self.source} (a TEST architecture; not real SSL features)"
        else:
            kind = f"{self.source} {arch.title}"
        return f"{kind}, weights sha256 {self.sha256[:12]}"

    def to_dict(self) -> dict:
        return {**asdict(self), "trained": self.trained, "label": self.label}

    @classmethod
    def from_dict(cls, values: dict) -> SSLWeights:
        return cls(**{k: values[k] for k in ("model", "source", "sha256", "origin", "seed")})


def new_model(arch: SSLArchitecture, num_layers: int) -> Wav2Vec2Model:
    """The architecture built with its first ``num_layers`` transformer layers, random, in eval mode."""
    return wavlm_model(**{**arch.params, "encoder_num_layers": num_layers}).eval()


def _truncated_state(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The state dict without the transformer layers at or beyond ``num_layers``."""
    pattern = re.compile(r"encoder\.transformer\.layers\.(\d+)\.")
    return {k: v for k, v in state.items() if not ((m := pattern.match(k)) and int(m[1]) >= num_layers)}


def pretrained_path(arch: SSLArchitecture, download: bool = True) -> Path:
    """The architecture's published checkpoint in the torch hub cache, downloaded there from
    torchaudio's URL when missing and ``download``."""
    if arch.checkpoint is None:
        raise SSLWeightsError(f"{arch.name} has no published weights")
    dest = Path(torch.hub.get_dir()) / "checkpoints" / arch.checkpoint
    if dest.is_file():
        return dest
    url = TORCHAUDIO_MODELS_URL + arch.checkpoint
    if not download or arch.test_only:
        raise SSLWeightsError(f"pretrained {arch.title} weights not in the torch hub cache ({dest})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dest), progress=True)
    except Exception as err:  # noqa: BLE001
        raise SSLWeightsError(f"cannot download {url} ({err}). Put the file at {dest}, pass it with "
                              "--ssl-weights FILE, or use --ssl-weights untrained (offline, UNTRAINED).") from None
    return dest


def load_model(arch: SSLArchitecture, num_layers: int, path: str | Path) -> Wav2Vec2Model:
    """The first ``num_layers`` layers of the architecture with the weights of the state dict at
    ``path`` (never executes code: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise SSLWeightsError(f"{path}: SSL weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files  # noqa: BLE001
        raise SSLWeightsError(f"{path}: not a loadable state dict ({type(err).__name__}: {err})") from None
    model = new_model(arch, num_layers)
    try:
        model.load_state_dict(_truncated_state(state, num_layers))
    except (RuntimeError, TypeError, AttributeError) as err:
        raise SSLWeightsError(f"{path}: not a {arch.title} state dict ({str(err)[:300]})") from None
    return model.eval()


def _untrained(arch: SSLArchitecture, num_layers: int, seed: int) -> Wav2Vec2Model:
    torch.manual_seed(seed)
    return new_model(arch, num_layers)


def resolve_weights(model: str, weights: str | WeightSource, num_layers: int, seed: int = 0,
                    download: bool = True) -> SSLWeights:
    """Provenance of ``weights`` (pretrained | untrained | FILE, `common.weights`) for ``model`` used
    up to layer ``num_layers``: the file's sha256, or (untrained) that of the seeded model built with
    ``num_layers`` layers."""
    arch = architecture(model)
    source = weights if isinstance(weights, WeightSource) else WeightSource.parse(weights)
    if source.untrained:
        state = _untrained(arch, num_layers, seed).state_dict()
        return SSLWeights(model, UNTRAINED, state_sha256(state), f"seed={seed}, {num_layers} layers", seed)
    path, kind = source.locate(lambda fetch: pretrained_path(arch, fetch), download, SSLWeightsError, "SSL weights")
    return SSLWeights(model, kind, file_sha256(path), str(Path(path).resolve()), seed)


def build(weights: SSLWeights, num_layers: int) -> Wav2Vec2Model:
    """The model of ``weights`` truncated to ``num_layers`` layers; SSLWeightsError when the weights
    found now differ from the recorded ones (another file, or another torch's random numbers)."""
    arch = architecture(weights.model)
    if weights.source == UNTRAINED:
        model = _untrained(arch, num_layers, weights.seed)
        if state_sha256(model.state_dict()) != weights.sha256:
            raise SSLWeightsError(f"untrained {arch.title} ({weights.origin}) built with {num_layers} layers is not "
                                  f"the one recorded (sha256 {weights.sha256[:12]}): other layers or another torch?")
        return model.eval()
    path = Path(weights.origin)
    if not path.is_file() or file_sha256(path) != weights.sha256:
        raise SSLWeightsError(f"{path}: missing, or its sha256 differs from the recorded {weights.sha256[:12]}")
    return load_model(arch, num_layers, path)


def count_used(arch: SSLArchitecture, num_layers: int) -> int:
    """Parameters of the front end (convolutions, projection, positional convolution, layer norm)
    plus the first ``num_layers`` transformer layers: what the stream's features depend on."""
    with torch.device("meta"):
        model = new_model(arch, num_layers)
    return sum(p.numel() for p in model.parameters())


class SSLFrontEnd:
    """Chosen layers of a frozen SSL model for a batch of utterances.

    ``layers``: 1-based transformer layers to return; the model must have at least ``max(layers)``.
    ``window_seconds``/``context_seconds``: how utterances too long for one pass are run
    (:func:`ssl_windows`).
    """

    def __init__(self, arch: SSLArchitecture, model: Wav2Vec2Model, layers: tuple[int, ...],
                 device: str | torch.device = "cpu", window_seconds: float = SSL_WINDOW_SECONDS,
                 context_seconds: float = SSL_CONTEXT_SECONDS) -> None:
        self.arch, self.layers = arch, tuple(layers)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.window_seconds, self.context_seconds = float(window_seconds), float(context_seconds)

    def windows(self, n_samples: int) -> list[tuple[int, int, int, int]]:
        """The windows an utterance of ``n_samples`` runs in (:func:`ssl_windows`)."""
        return ssl_windows(n_samples, self.window_seconds, self.context_seconds)

    @torch.no_grad()
    def __call__(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """16 kHz waveforms (each [n] or [1, n], n >= 400) -> float32 [frames, L, H] each, on the CPU.

        The utterances that fit one window are batched, zero-padded, and the model told each
        length, so that attention never reaches the padding and each utterance's frames equal its
        solo pass to float rounding. A longer one runs window by window (:func:`ssl_windows`)."""
        flat = [w.reshape(-1).to(torch.float32) for w in wavs]
        if self.arch.normalize_waveform:
            flat = [F.layer_norm(w, w.shape) for w in flat]
        plans = [self.windows(w.numel()) for w in flat]
        whole = [i for i, plan in enumerate(plans) if len(plan) == 1]
        out: list[torch.Tensor | None] = [None] * len(flat)
        if whole:
            for i, layers in zip(whole, self._batch([flat[i] for i in whole])):
                out[i] = layers
        for i, plan in enumerate(plans):
            if len(plan) > 1:
                out[i] = torch.cat([self._batch([flat[i][first:end]])[0][keep_first : keep_first + keep]
                                    for first, end, keep_first, keep in plan])
        return out

    def _batch(self, flat: list[torch.Tensor]) -> list[torch.Tensor]:
        """One padded pass over (normalised) waveforms -> float32 [frames, L, H] each, on the CPU."""
        lengths = torch.tensor([w.numel() for w in flat])
        padded = torch.nn.utils.rnn.pad_sequence(flat, batch_first=True).to(self.device)
        outputs = self._layer_outputs(padded, lengths.to(self.device))
        stacked = torch.stack([outputs[layer - 1] for layer in self.layers], dim=2)  # [B, T, L, H]
        counts = [ssl_frames(int(n)) for n in lengths]
        return [stacked[b, : counts[b]].float().cpu() for b in range(len(flat))]

    def _layer_outputs(self, padded: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Outputs [B, T, H] of transformer layers 1..max(layers) for padded waveforms [B, N].

        torchaudio's ``extract_features`` refuses lengths for WavLM (its attention takes a key
        padding mask, not the attention mask the encoder builds), so the encoder runs here: the
        same modules in the same order, padded frames zeroed after the projection (as torchaudio
        does) and excluded from attention by a key padding mask."""
        features, frames = self.model.feature_extractor(padded, lengths)
        encoder = self.model.encoder
        x = encoder.feature_projection(features)
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= frames[:, None]  # [B, T] True on padding
        x = x.masked_fill(pad[..., None], 0.0)
        transformer = encoder.transformer
        x = transformer._preprocess(x)
        outputs, position_bias = [], None
        key_mask = torch.zeros(pad.shape, dtype=x.dtype, device=x.device).masked_fill(pad, float("-inf"))
        for layer in transformer.layers[: max(self.layers)]:
            x, position_bias = layer(x, position_bias=position_bias, key_padding_mask=key_mask)
            outputs.append(x)
        return outputs


def front_end(weights: SSLWeights, layers: tuple[int, ...], device: str = "cpu",
              window_seconds: float = SSL_WINDOW_SECONDS, context_seconds: float = SSL_CONTEXT_SECONDS) -> SSLFrontEnd:
    """The SSL front end of ``weights``, built with the layers up to ``max(layers)``."""
    arch = architecture(weights.model)
    return SSLFrontEnd(arch, build(weights, max(layers)), layers, device, window_seconds, context_seconds)


def frame_variance(features: list[np.ndarray]) -> np.ndarray:
    """Per-layer variance over frames and dimensions of features [frames, L, H] pooled: a check
    that an (untrained) model's features are not constant."""
    pooled = np.concatenate([f.astype(np.float32) for f in features])
    return pooled.var(axis=(0, 2))
