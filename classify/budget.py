"""The trainable share: trainable parameters over the frozen parameters a model actually uses.

Frozen and used: EnCodec 24 kHz's encoder (7,425,792 parameters) and the codebooks of the levels
the store holds (n_q x 1024 x 128 values) for the code variants (the encoder alone for `latent`);
for SSL variants, the SSL model's front end and the transformer layers up to the last one the
stream holds (recorded with the stream: 164,290,976 for WavLM-Large layers 1-12). EnCodec's decoder
(7.4 M) never runs and is not counted; it was in the denominator before (the codec's 14.85 M).

The paper (arXiv 2603.16914) reports that 4.4 % of its parameters train; it does not give the
denominator, which with the frozen WavLM-Large (315.5 M) and EnCodec (14.9 M) whole would put its
trainable part near 14.5 M, and with the parts used here near 7.6 M.
"""

from __future__ import annotations

from typing import Any

ENCODEC_ENCODER_PARAMETERS = 7_425_792
"""Parameters of EnCodec 24 kHz's encoder (tests check it against the encodec package)."""
PAPER_SHARE_PERCENT = 4.4


def frozen_used(codec: dict[str, Any] | None, ssl: dict[str, Any] | None, codebooks: bool = True) -> dict[str, int]:
    """Frozen parameters by part: ``codec`` the store's codec attributes (None: the codec is not
    used), ``ssl`` the SSL stream's source (None: no SSL stream); ``codebooks``: the variant reads
    the codes (False for `latent`)."""
    parts: dict[str, int] = {}
    if codec is not None:
        parts["encodec_encoder"] = ENCODEC_ENCODER_PARAMETERS
        if codebooks:
            parts["encodec_codebooks"] = int(codec["n_q"]) * int(codec["codebook_size"]) * int(codec["dim"])
    if ssl is not None:
        parts["ssl_" + str(ssl.get("model", "model")).replace("-", "_")] = int(ssl["parameters_used"])
    return parts


def share(n_trainable: int, parts: dict[str, int]) -> dict[str, Any]:
    """The record kept in config.json: trainable, frozen parts and total, percent, the paper's."""
    frozen = sum(parts.values())
    return {"trainable": n_trainable, "frozen_used": parts, "frozen_total": frozen,
            "percent": 100 * n_trainable / frozen if frozen else float("nan"), "paper_percent": PAPER_SHARE_PERCENT}


def describe(record: dict[str, Any]) -> str:
    """One line for the training log."""
    parts = " + ".join(f"{name} {n:,}" for name, n in record["frozen_used"].items())
    return (f"{record['trainable']:,} trainable parameters = {record['percent']:.2f} % of the {record['frozen_total']:,} "
            f"frozen parameters the model uses ({parts}); the paper: {record['paper_percent']} %")
