"""Training configuration: one typed dataclass whose fields are the `--set` keys of `pipeline train`.

Defaults match ``configs/train/default.toml``. Values are checked here, once, so that a typo in a
config file or a ``--set`` fails before any data is read (nested settings too: ``head_kwargs`` against
the head's constructor, ``ssl_kwargs`` against `classify.ssloptions.SSLOptions`); the weighting variant's level range
(``single:k`` with k <= n_q) can only be checked against a store, by :func:`classify.model.build_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from classify.heads import HEADS, check_head_kwargs
from classify.ssloptions import SSLOptions
from classify.variants import check_variant

PAD_POLICIES = ("repeat", "zero")
BALANCE_MODES = ("weighted-loss", "sampler", "none")
AMP_DTYPES = ("bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
#: Fields that may differ between a run and its resumption (they do not change what was learned).
RESUMABLE_CHANGES = ("epochs", "patience", "device")


@dataclass
class TrainConfig:
    """Everything that determines a training run (besides the store).

    - ``variant``, ``tau``, ``level_norm``: hierarchy weighting (see `classify.variants` and
      `classify.weighting.HierarchyWeighting`; ``level_norm`` standardises each level's codebook); ``head``, ``head_kwargs``:
      classifier head (see `classify.heads.HEADS`) and its constructor arguments.
    - ``epochs``, ``batch_size``, ``lr``, ``weight_decay``: AdamW, one learning rate per step:
      linear warm-up over ``warmup_steps`` steps (at most a tenth of all steps, so that short
      runs reach ``lr``), then cosine decay to 0 at the last step.
    - ``weights_lr``: the peak learning rate of the hierarchy weights' logits (their own AdamW
      parameter group, same schedule, no weight decay); everything else trains at ``lr``. Adam
      moves a parameter by about its learning rate per step whatever the gradient's size, so a
      logit travels at most about ``weights_lr * steps / 2`` in a cosine-scheduled run, and the
      ratio of two levels' weights is exp(difference of logits / tau): at the head's ``lr`` a
      few hundred steps leave the weights near uniform (see `classify.train.param_groups`).
      ``tau`` only rescales that: under Adam, dividing tau by c is the same as multiplying
      ``weights_lr`` by c.
    - ``crop_seconds``: training crop length (frames = round(crop_seconds * frame rate)). Shorter
      utterances are padded by ``pad``: ``repeat`` tiles the utterance up to the crop length (the
      ASVspoof baselines' policy; every frame is valid), ``zero`` appends zero frames that the
      head masks out (the batch carries the true lengths).
    - ``balance``: ``weighted-loss`` weighs each class's loss by N / (2 N_class); ``sampler``
      draws each epoch's N utterances with replacement, both classes equally likely; ``none``.
    - ``patience``: stop after this many epochs without a better dev EER (0: never stop early).
    - ``seed``: model initialisation and all data randomness; ``train_split``, ``dev_split``:
      the store's splits to train on and to choose the best epoch (and calibrate) with.
    - ``max_eval_seconds``: utterances longer than this are scored as evenly spread windows of
      this length, whose logits are averaged.
    - ``amp``, ``amp_dtype``: mixed precision (``torch.autocast`` on the run's device type;
      ``fp16`` adds a ``torch.amp.GradScaler`` for that device) on CUDA. ``amp_cpu``: also on the
      CPU, where bf16 pays only on CPUs with bf16 units (AVX512-BF16, AMX) and fp16 rarely does;
      the tests use it to run the exact code of a GPU run.
    - ``latent_ram_mb``: the `latent` variant reads the store's latent into RAM when it is no
      larger than this, else per crop from the store.
    - ``ssl_kwargs``: options of the SSL variants (`ssl`, `ssl+V`): stream, layers, AttM sizes,
      online features; see `classify.ssloptions.SSLOptions`. Older checkpoints and results
      without a field read as `classify.migrations` says.
    - ``views``: the store's augmented views to train on ("" none, "all", "a,b"); each epoch each
      utterance is drawn clean with probability ``view_clean_share``, else one of its views
      (`classify.views`). ``dev_view``: "" (default) keeps dev selection, early stopping and
      calibration on the clean dev split; a view's name that applies to ``dev_split`` puts them on
      that view's copy of it (`classify.views.dev_source`).
    """

    variant: str = "qaf-static"
    head: str = "lstm"
    tau: float = 1.0
    level_norm: bool = True
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weights_lr: float = 0.1
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    crop_seconds: float = 4.0
    pad: str = "repeat"
    balance: str = "weighted-loss"
    patience: int = 5
    max_eval_seconds: float = 30.0
    amp: bool = True
    amp_dtype: str = "bf16"
    amp_cpu: bool = False
    device: str = "auto"
    seed: int = 0
    train_split: str = "train"
    dev_split: str = "dev"
    latent_ram_mb: float = 4096.0
    ssl_kwargs: dict[str, Any] = field(default_factory=dict)  # SSL variants only: see classify.ssloptions.SSLOptions
    views: str = ""
    view_clean_share: float = 0.5
    dev_view: str = ""

    def __post_init__(self) -> None:
        check_variant(self.variant)  # the registry's parser (classify.variants); k's range needs the store
        _choice("head", self.head, tuple(HEADS))
        _choice("pad", self.pad, PAD_POLICIES)
        _choice("balance", self.balance, BALANCE_MODES)
        _choice("amp_dtype", self.amp_dtype, AMP_DTYPES)
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device {self.device!r} is not one of {', '.join(DEVICES)} (or cuda:N)")
        if not isinstance(self.ssl_kwargs, dict):
            raise ValueError(f"ssl_kwargs must be a table such as {{proj_dim = 256}}, got {self.ssl_kwargs!r}")
        SSLOptions.from_dict(self.ssl_kwargs)
        if not isinstance(self.head_kwargs, dict):
            raise ValueError(f"head_kwargs must be a table such as {{proj_dim = 64}}, got {self.head_kwargs!r}")
        check_head_kwargs(self.head, self.head_kwargs)  # bound to the head's constructor: keys and types
        for name in ("tau", "lr", "weights_lr", "crop_seconds", "max_eval_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not isinstance(self.views, str) or not 0.0 <= self.view_clean_share <= 1.0:
            raise ValueError(f"views must be a string (\"all\", \"a,b\") and view_clean_share within [0, 1]; got "
                             f"{self.views!r}, {self.view_clean_share!r}")
        if not isinstance(self.dev_view, str) or self.dev_view.strip() == "all" or "," in self.dev_view:
            raise ValueError(f"dev_view must name one augmented view (\"\" for the clean dev split), got {self.dev_view!r}")
        for name in ("weight_decay", "warmup_steps", "patience", "latent_ram_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for this run: bf16 or fp16 with ``amp`` on CUDA (and on the CPU with
    ``amp_cpu``), else None (float32)."""
    if not config.amp or (device.type != "cuda" and not (device.type == "cpu" and config.amp_cpu)):
        return None
    return torch.bfloat16 if config.amp_dtype == "bf16" else torch.float16
