"""PNG plots for results: DET curves, learned quantizer-level weights, training curves.

Figures are drawn on :class:`matplotlib.figure.Figure` with the Agg canvas, without pyplot, so
nothing here changes the global matplotlib backend or leaks figures. Every plot takes a
``note``: a line printed under the title that says what made the result (codec weights,
encoder state, data), e.g. ``"EnCodec 24 kHz, UNTRAINED k-means encoder"``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from scipy.special import ndtri

from classify.metrics import compute_det_curve, compute_eer

# DET axis ticks (probabilities) and the plotted range, as in the usual NIST-style DET plots.
_DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)
_DET_LIMITS = (0.0005, 0.995)
_DPI = 120


def _titled(fig: Figure, title: str, note: str) -> None:
    """Put ``title`` and, when given, ``note`` (smaller, on its own line) on top of ``fig``."""
    width = int(fig.get_figwidth() * 12)  # characters that fit at this font size
    fig.suptitle(f"{title}\n" + "\n".join(textwrap.wrap(note, width)) if note else title, fontsize=10)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def _probit(p: np.ndarray) -> np.ndarray:
    """Normal deviate of probabilities clipped to the plotted range (so 0 and 1 stay finite)."""
    return ndtri(np.clip(p, *_DET_LIMITS))


def plot_det(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    title: str = "DET curve",
    note: str = "",
) -> Path:
    """DET curves on normal-deviate axes, with each system's EER point marked.

    Args:
        curves: name -> (bona fide scores [Nb], spoof scores [Ns]); higher = more bona fide.
        path: PNG file to write.
        title: figure title.
        note: provenance line under the title.

    Returns:
        ``path``. x = false alarm rate (spoof accepted), y = miss rate (bona fide rejected),
        both in %; rates outside 0.05 %..99.5 % are drawn at the edge.
    """
    if not curves:
        raise ValueError("plot_det needs at least one curve")
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.subplots()
    for name, (bona, spoof) in curves.items():
        frr, far, _ = compute_det_curve(bona, spoof)
        eer, _ = compute_eer(bona, spoof)
        (line,) = ax.plot(_probit(far), _probit(frr), label=f"{name} (EER {100 * eer:.2f} %)")
        eer_xy = _probit(np.array([eer]))
        ax.plot(eer_xy, eer_xy, "o", color=line.get_color())
    ticks = _probit(np.array(_DET_TICKS))
    labels = [f"{100 * p:g}" for p in _DET_TICKS]
    limits = _probit(np.array(_DET_LIMITS))
    ax.plot(limits, limits, color="0.7", linewidth=0.8, linestyle="--", label="EER line")
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel("false alarm rate: spoof accepted (%)")
    ax.set_ylabel("miss rate: bona fide rejected (%)")
    ax.grid(True, color="0.85")
    ax.legend(loc="upper right", fontsize=8)
    _titled(fig, title, note)
    return _save(fig, path)


def plot_level_weights(
    weights: Any,
    path: str | Path,
    title: str = "Quantizer level weights",
    note: str = "",
) -> Path:
    """Learned weight per RVQ level: bar chart for [n_q], heatmap (levels x dims) for [n_q, D].

    Args:
        weights: [n_q] or [n_q, D] array-like (a torch tensor must be detached first), e.g.
            softmax-normalised alpha; level 1 is row 0. Bars of weights summing to 1 get a
            dashed line at the uniform weight 1/n_q.
        path: PNG file to write.
        title: figure title.
        note: provenance line under the title.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim not in (1, 2) or w.size == 0:
        raise ValueError(f"weights must be a non-empty [n_q] or [n_q, D] array, got shape {w.shape}")
    levels = np.arange(1, w.shape[0] + 1)
    if w.ndim == 1:
        fig = Figure(figsize=(max(4.0, 0.6 * levels.size + 2), 4), layout="constrained")
        ax = fig.subplots()
        ax.bar(levels, w, color="tab:blue")
        if abs(w.sum() - 1.0) < 1e-6:  # normalised weights: show the uniform ("mean") reference
            ax.axhline(1.0 / w.size, color="0.5", linestyle="--", linewidth=0.8, label="uniform 1/n_q")
            ax.legend(fontsize=8)
        ax.set_xticks(levels)
        ax.set_xlabel("quantizer level")
        ax.set_ylabel("weight")
    else:
        fig = Figure(figsize=(8, max(3.0, 0.35 * levels.size + 1.5)), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(w, aspect="auto", interpolation="nearest", cmap="viridis")
        ax.set_yticks(np.arange(levels.size), [str(level) for level in levels])
        ax.set_xlabel("embedding dimension")
        ax.set_ylabel("quantizer level")
        fig.colorbar(image, ax=ax, label="weight")
    _titled(fig, title, note)
    return _save(fig, path)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key`` over the history, skipping epochs where it is absent or NaN."""
    xs: list[float] = []
    ys: list[float] = []
    for index, row in enumerate(history):
        value = row.get(key)
        if value is None or not math.isfinite(float(value)):
            continue
        xs.append(float(row.get("epoch", index + 1)))
        ys.append(float(value))
    return xs, ys


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str = "Training",
    note: str = "",
) -> Path:
    """Loss and dev EER per epoch, side by side.

    Args:
        history: one dict per epoch. ``epoch`` (else the 1-based position) is the x value;
            every key containing ``loss`` (e.g. ``train_loss``, ``dev_loss``) is drawn in the
            left panel, every key containing ``eer`` (fractions, e.g. ``dev_eer``) in the right
            panel, in %. Missing or NaN values are skipped.
        path: PNG file to write.
        title: figure title.
        note: provenance line under the title.
    """
    keys = sorted({key for row in history for key in row})
    loss_keys = [key for key in keys if "loss" in key.lower()]
    eer_keys = [key for key in keys if "eer" in key.lower()]
    if not loss_keys and not eer_keys:
        raise ValueError("history has no loss or EER entries to plot")
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, eer_ax = fig.subplots(1, 2)
    for key in loss_keys:
        loss_ax.plot(*_series(history, key), marker=".", label=key)
    for key in eer_keys:
        epochs, values = _series(history, key)
        eer_ax.plot(epochs, [100 * v for v in values], marker=".", label=key)
    loss_ax.set_ylabel("loss")
    eer_ax.set_ylabel("EER (%)")
    for ax, used in ((loss_ax, loss_keys), (eer_ax, eer_keys)):
        ax.set_xlabel("epoch")
        ax.grid(True, color="0.85")
        if used:
            ax.legend(fontsize=8)
    _titled(fig, title, note)
    return _save(fig, path)


def plot_explanation(explanation: Any, path: str | Path, title: str = "Explanation") -> Path:
    """An explanation (`classify.detector.Explanation`) drawn in three panels: the waveform, the score
    change over time (each occluded window's change at its centre, on the waveform's time axis) and
    the per-level contributions. The codec weights are the note under the title.

    Args:
        explanation: has ``waveform`` [T] at ``sample_rate``, ``times``/``over_time`` [W], ``levels``
            [Q], ``score``, ``llr``, ``decision``, ``window_seconds``, ``codec_weights``.
        path: PNG file to write.
        title: figure title.
    """
    e = explanation
    seconds = np.arange(e.waveform.size) / e.sample_rate
    fig = Figure(figsize=(10, 7), layout="constrained")
    wave_ax, time_ax, level_ax = fig.subplots(3, 1, height_ratios=(1, 1, 1))
    wave_ax.plot(seconds, e.waveform, linewidth=0.4, color="0.3")
    wave_ax.set_ylabel("amplitude (24 kHz)")
    wave_ax.set_xlim(0, max(seconds[-1], 1e-3))
    time_ax.sharex(wave_ax)
    time_ax.axhline(0, color="0.6", linewidth=0.8)
    time_ax.plot(e.times, e.over_time, marker=".", color="tab:red")
    time_ax.set_ylabel("score change")
    time_ax.set_xlabel(f"time (s); window {e.window_seconds:.2f} s occluded")
    time_ax.grid(True, color="0.9")
    if len(e.levels):
        levels = np.arange(1, len(e.levels) + 1)
        level_ax.bar(levels, e.levels, color=np.where(np.asarray(e.levels) >= 0, "tab:blue", "tab:orange"))
        level_ax.set_xticks(levels)
        level_ax.axhline(0, color="0.6", linewidth=0.8)
    else:
        level_ax.text(0.5, 0.5, "no quantizer levels (latent variant)", ha="center", va="center",
                      transform=level_ax.transAxes)
    level_ax.set_xlabel("quantizer level (occluded by its mean codeword)")
    level_ax.set_ylabel("score change")
    llr = "" if e.llr is None else f", LLR {e.llr:.3f}"
    verdict = f", {e.decision}" if e.decision else ""
    _titled(fig, f"{title}: score {e.score:.4f}{llr}{verdict}", f"codec weights: {e.codec_weights}")
    return _save(fig, path)


def plot_matrix(table: Any, path: str | Path, title: str = "Train x test EER (%)", note: str = "") -> Path:
    """Heat-map of a train x test summary (`classify.matrix.summary`: columns setting, test, mean,
    sd, low, high, empty): rows = setting, columns = test corpus (then pooled and average), each
    cell's mean EER in %, its spread and interval; empty cells grey, marked "empty"."""
    settings = list(dict.fromkeys(table["setting"]))
    tests = list(dict.fromkeys(table["test"]))
    values = np.full((len(settings), len(tests)), np.nan)
    texts = [["empty"] * len(tests) for _ in settings]
    for row in table.itertuples(index=False):
        i, j = settings.index(row.setting), tests.index(row.test)
        if row.mean == row.mean:  # not NaN
            values[i, j] = 100 * row.mean
            spread = f"\n±{100 * row.sd:.1f}" if row.sd == row.sd else ""
            interval = f"\n[{100 * row.low:.1f}, {100 * row.high:.1f}]" if row.low == row.low else ""
            texts[i][j] = f"{100 * row.mean:.1f}{spread}{interval}"
    fig = Figure(figsize=(1.6 + 1.3 * len(tests), 1.2 + 0.9 * len(settings)), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=max(50.0, np.nanmax(values, initial=0)),
                      aspect="auto")
    light = 0.45 * image.norm.vmax  # dark cells (high EER) get white text
    for i in range(len(settings)):
        for j in range(len(tests)):
            color = "white" if values[i, j] == values[i, j] and values[i, j] > light else "black"
            ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(tests)), tests, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(settings)), [textwrap.shorten(s, 40) for s in settings], fontsize=8)
    ax.set_xlabel("test corpus")
    fig.colorbar(image, ax=ax, label="mean EER (%)")
    _titled(fig, title, note)
    return _save(fig, path)
