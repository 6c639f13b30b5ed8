"""Options of the SSL variants (`ssl`, `ssl+V`): the ``ssl_kwargs`` table of a training config.

    stream     store stream holding the SSL layers (default "ssl", what `pipeline extract --ssl` adds)
    layers     the stream's layers to merge, 1-based model layers ("1-12", [1, 3]); default all of them
    proj_dim   AttM projection's inner size (default 512; the AttM release: layers x hidden / 4)
    out_dim    AttM output size (default: the SSL hidden size, as in AttM)
    norm       LayerNorm of AttM's output frames (default true; false: the AttM release's, see
               `classify.attm`). Checkpoints made before this option have none, and are rebuilt so.
    ram_mb     read the stream into RAM when it is no larger (default 2048 MB), else per crop from the store
    online     compute the SSL layers from the audio during training instead of reading the stream
               (`pipeline train --ssl-online`; see `classify.online`)
    model, weights, crop_seconds
               for online features of a store without an SSL stream: the SSL model (wavlm-large),
               its weights (pretrained | FILE | untrained) and the train crop, as `pipeline extract
               --ssl --ssl-weights --ssl-crop` would take them; with a stream they come from it
    batch_seconds   online: padded audio seconds per SSL forward pass (default 8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import ConfigError, build


@dataclass(frozen=True)
class SSLOptions:
    stream: str = "ssl"
    layers: Any = None
    proj_dim: int = 512
    out_dim: int | None = None
    norm: bool = True
    ram_mb: float = 2048.0
    online: bool = False
    model: str | None = None
    weights: str = "pretrained"
    crop_seconds: float | None = None
    batch_seconds: float = 8.0

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> SSLOptions:
        """Validated options; ValueError naming an unknown key (with the valid ones), a value of the
        wrong type or a bad value."""
        try:
            options = build(cls, dict(values or {}), where="ssl_kwargs")  # keys and types
        except ConfigError as err:  # a ValueError
            text = str(err)
            raise ConfigError(text if text.startswith("ssl_kwargs") else f"ssl_kwargs.{text}") from None
        if options.proj_dim < 1 or (options.out_dim is not None and options.out_dim < 1):
            raise ValueError("ssl_kwargs: proj_dim and out_dim must be >= 1")
        if options.crop_seconds is not None and options.crop_seconds <= 0:
            raise ValueError("ssl_kwargs: crop_seconds must be > 0")
        return options
