"""The one way a model is built: from a training config (current format, `classify.migrations`), the
codec's codebooks and, for the SSL variants, the SSL stream's record; with trained parameters when
there are some.

Every caller goes through :func:`build`: training (a new model, and the model a resumed run loads
its checkpoint into), `classify.evaluate` and sweeps (:func:`classify.checkpoint.model_from_checkpoint`,
over a store) and the Detector (over the codec it rebuilt, with no store). :func:`store_inputs`
finds the codebooks and the SSL stream's record in a store.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from classify.attm import AttentiveMerging
from classify.fusion import PCA_BASIS_KEY, PCA_MEAN_KEY, FusedDetector, layer_index, ssl_spec
from classify.heads import build_head
from classify.model import SpoofDetector, build_model
from classify.ssloptions import SSLOptions
from classify.variants import split_ssl
from classify.weighting import HierarchyWeighting
from store.reader import FeatureStore
from store.sslstorage import SSLStorage, read_pca


class RebuildError(ValueError):
    """A model's parameters do not fit what it is rebuilt over (another codec's codebooks, no SSL record)."""


def build(config: dict[str, Any], codebooks: Tensor, ssl_source: dict[str, Any] | None,
          trained: dict[str, Tensor] | None = None, where: str = "the model",
          pca: tuple[np.ndarray, np.ndarray] | None = None) -> SpoofDetector | FusedDetector:
    """The model of ``config`` (a TrainConfig as a dict, current format) over ``codebooks`` [Q, K, D]:
    a SpoofDetector for the codec variants, a FusedDetector over the SSL stream ``ssl_source`` (the
    record a store's SSL stream and a checkpoint's ``ssl`` entry hold) for `ssl` and `ssl+V`.

    ``trained``: the state dict to load (strict). RebuildError naming ``where`` when the variant
    needs an SSL record and there is none, or when the model's fixed tables (every variant whose
    record does not train its tables) were built from other codebooks than ``codebooks``.

    A model over a ``pca:K`` SSL stream carries the stream's mean and basis of the layers it reads
    (buffers, so checkpoints and bundles keep them; `classify.fusion.FusedDetector.ssl_as_trained`):
    ``trained``'s when it has them, else ``pca`` (mean [L, H], basis [L, H, K] of the stream's
    layers: :func:`store_pca`); a model saved before models carried them, rebuilt with no ``pca``,
    has none."""
    uses_ssl, codec_variant = split_ssl(config["variant"])
    if not uses_ssl:
        model: SpoofDetector | FusedDetector = build_model(
            codebooks, config["variant"], config["head"], config["tau"], config["head_kwargs"], config["level_norm"])
    else:
        if not ssl_source:
            raise RebuildError(f"{where}: variant {config['variant']!r} needs the SSL stream's record (checkpoint "
                               "entry 'ssl'), which it lacks")
        model = _fused(config, codec_variant, codebooks, ssl_source, _carried_pca(trained, ssl_source, pca))
    if trained is not None:
        _check_tables(model, trained, where)
        model.load_state_dict(trained)
    return model


def _carried_pca(trained: dict[str, Tensor] | None, source: dict[str, Any],
                 pca: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(mean, basis, of the model's layers already) the model is to carry, or None."""
    if trained is not None and PCA_BASIS_KEY in trained:
        return trained[PCA_MEAN_KEY].cpu().numpy(), trained[PCA_BASIS_KEY].cpu().numpy(), True
    if pca is None or not SSLStorage.from_source(source).components:
        return None
    return pca[0], pca[1], False


def _fused(config: dict[str, Any], codec_variant: str | None, codebooks: Tensor,
           source: dict[str, Any], pca: tuple[np.ndarray, np.ndarray, bool] | None = None) -> FusedDetector:
    options = SSLOptions.from_dict(config.get("ssl_kwargs"))
    index = layer_index(tuple(source["layers"]), options, source["model"])
    if pca is not None and not pca[2]:  # the stream's layers -> the model's
        pca = (pca[0][index], pca[1][index], True)
    attm = AttentiveMerging(len(index), int(source["hidden"]), options.proj_dim, options.out_dim, options.norm)
    weighting = None
    if codec_variant is not None:
        weighting = HierarchyWeighting(codebooks, codec_variant, config["tau"], config["level_norm"])
    in_dim = attm.out_dim + (weighting.out_dim if weighting is not None else 0)
    head = build_head(config["head"], in_dim, **(config["head_kwargs"] or {}))
    return FusedDetector(attm, weighting, head, source, index, None if pca is None else pca[:2])


def _check_tables(model: nn.Module, trained: dict[str, Tensor], where: str) -> None:
    weighting = model.weighting
    table = trained.get("weighting.table")
    if weighting is None or table is None or weighting.spec.info.tables:
        return
    if table.shape != weighting.table.shape or not torch.allclose(weighting.table, table, rtol=1e-5, atol=1e-6):
        raise RebuildError(f"{where}: its tables were built from other codebooks than those it is rebuilt over "
                           "(another codec, or an inconsistent model file)")


def store_inputs(config: dict[str, Any], store: FeatureStore) -> tuple[Tensor, dict[str, Any] | None]:
    """(codebooks, SSL stream record or None) of ``store`` for ``config``: what :func:`build` takes."""
    codebooks = torch.from_numpy(store.codebooks)
    if not split_ssl(config["variant"])[0]:
        return codebooks, None
    source, _ = ssl_spec(store, SSLOptions.from_dict(config.get("ssl_kwargs")))
    return codebooks, source


def store_pca(config: dict[str, Any], store: FeatureStore) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean [L, H], basis [L, H, K]) of ``store``'s SSL stream for ``config`` when it is stored as
    ``pca:K`` (`store.sslstorage`); else None."""
    if not split_ssl(config["variant"])[0]:
        return None
    name = SSLOptions.from_dict(config.get("ssl_kwargs")).stream
    spec = store.streams.get(name)
    return None if spec is None else read_pca(store.root, spec)


def for_store(config: dict[str, Any], store: FeatureStore) -> SpoofDetector | FusedDetector:
    """A new (untrained) model of ``config`` over ``store``'s codebooks and SSL stream (and its
    PCA basis, which the model carries, when the stream has one)."""
    return build(config, *store_inputs(config, store), pca=store_pca(config, store))
