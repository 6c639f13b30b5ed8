"""Plots: PNG files are written, and the figures hold the data and provenance note they should."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from scipy.stats import norm

from classify import plots
from classify.metrics import compute_eer

NOTE = "EnCodec 24 kHz, UNTRAINED k-means encoder"


@pytest.fixture
def figures(monkeypatch):
    """Record every figure the plot functions save (they are still written to disk)."""
    saved = []
    original = plots._save

    def recording_save(fig, path):
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", recording_save)
    return saved


def assert_png(path, min_size=(200, 200)):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1]
    assert image[..., :3].std() > 0  # not a blank canvas


def test_plot_det_marks_eer_on_probit_axes(tmp_path, figures):
    rng = np.random.default_rng(0)
    curves = {
        "good": (rng.normal(2, 1, 300), rng.normal(-2, 1, 400)),
        "tied": (np.round(rng.normal(0.5, 1, 200), 1), np.round(rng.normal(-0.5, 1, 200), 1)),
    }
    path = plots.plot_det(curves, tmp_path / "sub" / "det.png", note=NOTE)
    assert path == tmp_path / "sub" / "det.png"
    assert_png(path)
    fig = figures[-1]
    assert NOTE in fig._suptitle.get_text()
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    for name, (bona, spoof) in curves.items():
        eer = compute_eer(bona, spoof)[0]
        assert f"{name} (EER {100 * eer:.2f} %)" in legend
        marker = [ln for ln in ax.get_lines() if ln.get_marker() == "o" and np.isclose(ln.get_xdata()[0], norm.ppf(eer))]
        assert marker and np.isclose(marker[0].get_ydata()[0], norm.ppf(eer))
    # x and y are normal deviates: the 1 % tick sits at ppf(0.01)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert np.isclose(ax.get_xticks()[labels.index("1")], norm.ppf(0.01))


def test_plot_det_needs_a_curve(tmp_path):
    with pytest.raises(ValueError, match="at least one curve"):
        plots.plot_det({}, tmp_path / "det.png")


def test_level_weights_bar_chart(tmp_path, figures):
    weights = np.array([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    assert_png(plots.plot_level_weights(weights, tmp_path / "w.png", title="QAF", note=NOTE))
    fig = figures[-1]
    assert "QAF" in fig._suptitle.get_text() and NOTE in fig._suptitle.get_text()
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx(weights.tolist())
    assert [b.get_x() + b.get_width() / 2 for b in bars] == pytest.approx(list(range(1, 9)))
    uniform = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "uniform 1/n_q"]
    assert uniform and uniform[0].get_ydata()[0] == pytest.approx(1 / 8)


def test_level_weights_heatmap(tmp_path, figures):
    weights = np.random.default_rng(1).dirichlet(np.ones(8), size=16).T  # [n_q=8, D=16]
    assert_png(plots.plot_level_weights(weights, tmp_path / "w2.png", note=NOTE))
    ax = figures[-1].axes[0]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), weights)
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(q) for q in range(1, 9)]


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 2)), np.array([]), 3.0])
def test_level_weights_reject_bad_shapes(tmp_path, bad):
    with pytest.raises(ValueError, match="n_q"):
        plots.plot_level_weights(bad, tmp_path / "w.png")


def test_training_curves(tmp_path, figures):
    history = [
        {"epoch": 1, "train_loss": 0.7, "dev_loss": 0.69, "dev_eer": 0.40},
        {"epoch": 2, "train_loss": 0.5, "dev_loss": float("nan"), "dev_eer": 0.25},
        {"epoch": 3, "train_loss": 0.3, "dev_eer": 0.10, "lr": 1e-3},
    ]
    assert_png(plots.plot_training_curves(history, tmp_path / "t.png", note=NOTE))
    fig = figures[-1]
    assert NOTE in fig._suptitle.get_text()
    loss_ax, eer_ax = fig.axes
    lines = {ln.get_label(): ln for ln in loss_ax.get_lines()}
    assert set(lines) == {"train_loss", "dev_loss"}
    assert lines["train_loss"].get_ydata().tolist() == [0.7, 0.5, 0.3]
    assert lines["dev_loss"].get_xdata().tolist() == [1.0]  # NaN and missing epochs skipped
    (eer_line,) = eer_ax.get_lines()
    assert eer_line.get_ydata().tolist() == pytest.approx([40.0, 25.0, 10.0])


def test_training_curves_without_metrics(tmp_path):
    with pytest.raises(ValueError, match="no loss or EER"):
        plots.plot_training_curves([{"epoch": 1, "lr": 0.1}], tmp_path / "t.png")
