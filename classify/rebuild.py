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

import torch
from torch import Tensor, nn

from classify.attm import AttentiveMerging
from classify.fusion import FusedDetector, layer_index, ssl_spec
from classify.heads import build_head
from classify.model import SpoofDetector, build_model
from classify.ssloptions import SSLOptions
from classify.variants import split_ssl
from classify.weighting import HierarchyWeighting
from store.reader import FeatureStore


class RebuildError(ValueError):
    """A model's parameters do not fit what it is rebuilt over (another codec's codebooks, no SSL record)."""


def build(config: dict[str, Any], codebooks: Tensor, ssl_source: dict[str, Any] | None,
          trained: dict[str, Tensor] | None = None, where: str = "the model") -> SpoofDetector | FusedDetector:
    """The model of ``config`` (a TrainConfig as a dict, current format) over ``codebooks`` [Q, K, D]:
    a SpoofDetector for the codec variants, a FusedDetector over the SSL stream ``ssl_source`` (the
    record a store's SSL stream and a checkpoint's ``ssl`` entry hold) for `ssl` and `ssl+V`.

    ``trained``: the state dict to load (strict). RebuildError naming ``where`` when the variant
    needs an SSL record and there is none, or when the model's fixed tables (every variant whose
    record does not train its tables) were built from other codebooks than ``codebooks``."""
    uses_ssl, codec_variant = split_ssl(config["variant"])
    if not uses_ssl:
        model: SpoofDetector | FusedDetector = build_model(
            codebooks, config["variant"], config["head"], config["tau"], config["head_kwargs"], config["level_norm"])
    else:
        if not ssl_source:
            raise RebuildError(f"{where}: variant {config['variant']!r} needs the SSL stream's record (checkpoint "
                               "entry 'ssl'), which it lacks")
        model = _fused(config, codec_variant, codebooks, ssl_source)
    if trained is not None:
        _check_tables(model, trained, where)
        model.load_state_dict(trained)
    return model


def _fused(config: dict[str, Any], codec_variant: str | None, codebooks: Tensor,
           source: dict[str, Any]) -> FusedDetector:
    options = SSLOptions.from_dict(config.get("ssl_kwargs"))
    index = layer_index(tuple(source["layers"]), options, source["model"])
    attm = AttentiveMerging(len(index), int(source["hidden"]), options.proj_dim, options.out_dim, options.norm)
    weighting = None
    if codec_variant is not None:
        weighting = HierarchyWeighting(codebooks, codec_variant, config["tau"], config["level_norm"])
    in_dim = attm.out_dim + (weighting.out_dim if weighting is not None else 0)
    head = build_head(config["head"], in_dim, **(config["head_kwargs"] or {}))
    return FusedDetector(attm, weighting, head, source, index)


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


def for_store(config: dict[str, Any], store: FeatureStore) -> SpoofDetector | FusedDetector:
    """A new (untrained) model of ``config`` over ``store``'s codebooks and SSL stream."""
    return build(config, *store_inputs(config, store))
