"""The paper's full system: a frozen SSL stream merged by AttM, fused with the codec hierarchy.

Variants (`classify.variants.split_ssl`): ``ssl`` is the paper's baseline (AttM over the SSL layers,
then the LSTM head); ``ssl+V`` adds the codec hierarchy under weighting variant V (``ssl+mean``,
``ssl+qaf-static``, ``ssl+trainable-tables``, ...). As the paper describes it (arXiv 2603.16914): the
two streams are aligned in time (`classify.align`: the codec features averaged over each SSL
frame's 20 ms), concatenated per frame, projected, passed through a 1-layer LSTM, averaged over
time and classified; the projection, LSTM, mean and linear layer are `classify.heads.LSTMHead`.

    ssl [B, 2P, L, H] -> AttM -> [B, 2P, A] --------------------------------+
    codes [B, 3P, Q] -> HierarchyWeighting -> [B, 3P, D] -> align -> [B, 2P, D] -> concat [B, 2P, A + D]
                                                                                 -> LSTMHead -> logits [B]

The SSL model itself is frozen and never part of the trainable model: its layers come from the
store's SSL stream, or are computed from the audio during training (``ssl_kwargs.online``,
`classify.online`, the only place `classify` imports the extraction code, lazily).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from classify.align import align_codec_to_ssl
from classify.attm import AttentiveMerging
from classify.ssloptions import SSLOptions
from classify.weighting import HierarchyWeighting
from common.selection import format_layers, parse_layers
from store.reader import FeatureStore, StoreReadError
from store.sslstorage import SSLStorage


class FusedDetector(nn.Module):
    """codes [B, 3P, Q], lengths [B] (valid SSL frames), latent [B, 3P, D] or None, ssl [B, 2P, L, H]
    -> logits [B], higher = bona fide. ``weighting`` None: the SSL stream alone (`ssl`)."""

    def __init__(self, attm: AttentiveMerging, weighting: HierarchyWeighting | None, head: nn.Module,
                 ssl_source: dict[str, Any], layer_index: np.ndarray,
                 pca: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.attm = attm
        self.weighting = weighting
        self.head = head
        self.ssl_source = ssl_source  # what made the SSL features (checkpoints record it)
        self.layer_index = layer_index
        if pca is not None:  # buffers: checkpoints and bundles carry the basis (see ssl_as_trained)
            self.register_buffer(PCA_MEAN_KEY, torch.as_tensor(np.asarray(pca[0], np.float32)))
            self.register_buffer(PCA_BASIS_KEY, torch.as_tensor(np.asarray(pca[1], np.float32)))
            self._register_load_state_dict_pre_hook(_keep_pca, with_module=True)

    @property
    def ssl_storage(self) -> SSLStorage:
        """The storage of the SSL stream the model was trained on (`store.sslstorage`)."""
        return SSLStorage.from_source(self.ssl_source)

    @property
    def pca(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean [L', H], basis [L', H, K]) of a ``pca:K`` training stream's layers the model reads
        (None: no PCA, or a model saved before models carried it)."""
        if not hasattr(self, PCA_BASIS_KEY):
            return None
        return tuple(getattr(self, k).detach().cpu().numpy() for k in (PCA_MEAN_KEY, PCA_BASIS_KEY))

    def ssl_as_trained(self, frames: np.ndarray) -> np.ndarray:
        """SSL frames [F, L', H] of the model's layers computed afresh from audio (the Detector, online
        features), as the training reader gave them from the training store's stream (:func:`as_trained`
        with the basis the model carries)."""
        return as_trained(frames, self.ssl_storage, self.pca)

    def forward(self, codes: Tensor, lengths: Tensor, latent: Tensor | None = None, ssl: Tensor | None = None) -> Tensor:
        if ssl is None:
            raise ValueError("an SSL variant needs the SSL layers (the batch has none)")
        features = self.attm(ssl.to(torch.float32), lengths)
        if self.weighting is not None:
            features = torch.cat([features, align_codec_to_ssl(self.weighting(codes, latent))], dim=-1)
        return self.head(features, lengths)

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


PCA_MEAN_KEY, PCA_BASIS_KEY = "ssl_pca_mean", "ssl_pca_basis"
"""A ``pca:K`` SSL model's buffers: the training stream's mean and basis of the layers it reads."""


def _keep_pca(module: nn.Module, state: dict[str, Any], prefix: str, *_args: Any) -> None:
    """Parameters saved before models carried their PCA basis (a run resumed across the change)
    keep the basis the model was built with (`load_state_dict` hands hooks its own copy)."""
    for key in (PCA_MEAN_KEY, PCA_BASIS_KEY):
        state.setdefault(prefix + key, getattr(module, key))


def as_trained(frames: Any, storage: SSLStorage, pca: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
    """SSL frames [F, L, H] computed from audio as a model trained on a stream of ``storage``
    (`store.sslstorage`) saw them: coded and decoded (float16) as extraction and the training reader
    do (int8; a ``pca:K`` projection onto ``pca`` = (mean [L, H], basis [L, H, K]) of the same layers);
    a float16 stream's as they are. A ``pca:K`` model saved before models carried their basis (no
    ``pca``) gets them as they are too, as such models always scored."""
    if storage.plain or (storage.components and pca is None):
        return frames
    return storage.round_trip(frames, *(pca or (None, None)))


def ssl_spec(store: FeatureStore, options: SSLOptions) -> tuple[dict[str, Any], tuple[int, ...]]:
    """(source of the SSL features, the layers they hold): the store's stream, or (online without a
    stream) the options' model, weights and layers (`classify.online`)."""
    if options.stream in store.streams:
        spec = store.streams[options.stream]
        if not spec.source or spec.source.get("kind") != "ssl":
            raise StoreReadError(f"{store.url}: stream {options.stream!r} is not an SSL stream")
        return spec.source, tuple(spec.source["layers"])
    if not options.online:
        store.stream(options.stream)  # raises, naming the streams the store has
    from classify.online import online_source  # noqa: PLC0415 - lazy: imports the extraction code

    source = online_source(options)
    return source, tuple(source["layers"])


def layer_index(stream_layers: tuple[int, ...], options: SSLOptions, model: str) -> np.ndarray:
    if options.layers is None:
        return np.arange(len(stream_layers))
    wanted = list(parse_layers(options.layers))  # the one reading of a layer selection (common.selection)
    missing = sorted(set(wanted) - set(stream_layers))
    if missing:
        raise ValueError(f"ssl_kwargs.layers asks for layer(s) {missing} of {model}, but the SSL stream holds "
                         f"layers {list(stream_layers)}")
    return np.array([stream_layers.index(layer) for layer in wanted])


def ssl_provenance(model: nn.Module) -> dict[str, Any] | None:
    """The SSL features' source recorded in checkpoints (None for the codec variants)."""
    return model.ssl_source if isinstance(model, FusedDetector) else None


def ssl_label(model: nn.Module) -> str:
    """The SSL weights' label for reports ("" for the codec variants)."""
    source = ssl_provenance(model)
    return "" if source is None else f"{source['weights']['label']}, layers {format_layers(list(source['layers']))}"


def check_ssl_compatible(checkpoint: dict[str, Any], now: dict[str, Any] | None) -> list[str]:
    """Differences between the SSL features a checkpoint was trained on and the SSL stream record
    ``now`` (of a store, or `ssl_provenance` of a model; model, weights, layers): one line each;
    empty when they agree."""
    trained = checkpoint.get("ssl")
    if trained is None or now is None:
        return []
    problems = []
    for key in ("model", "layers", "hidden"):
        if trained.get(key) != now.get(key):
            problems.append(f"SSL {key}: checkpoint {trained.get(key)!r}, store {now.get(key)!r}")
    if trained["weights"]["sha256"] != now["weights"]["sha256"]:
        problems.append(f"SSL weights: checkpoint {trained['weights']['label']}; store {now['weights']['label']}")
    return problems
