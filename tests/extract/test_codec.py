"""Codec weights: loading from a local file, the sha256 check, weights_only safety, k-means init."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch

import extract.codec as codec
from extract.codec import (
    WeightsError,
    load_weights_file,
    new_model,
    pretrained_file,
)


def test_weights_file_roundtrip_and_errors(tmp_path):
    torch.manual_seed(1)
    model = new_model()
    path = tmp_path / "w.th"
    torch.save(model.state_dict(), path)
    loaded = load_weights_file(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))

    with pytest.raises(WeightsError, match="not found"):
        load_weights_file(tmp_path / "nope.th")
    (tmp_path / "junk.th").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="junk.th"):
        load_weights_file(tmp_path / "junk.th")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.th")
    with pytest.raises(WeightsError, match="not an EnCodec 24 kHz state dict"):
        load_weights_file(tmp_path / "other.th")


class _Exploit:
    """Unpickling it would create ``marker`` (a file in the test's own temporary folder)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_weights_file_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.th"
    with open(path, "wb") as f:
        pickle.dump({"x": _Exploit(str(marker))}, f)
    with open(path, "rb") as f:  # the file does run code when unpickled plainly: the test would see it
        pickle.load(f)["x"].close()
    assert marker.exists()
    marker.unlink()
    with pytest.raises(WeightsError, match="evil.th"):
        load_weights_file(path)
    assert not marker.exists()


def test_pretrained_file_checks_sha256_prefix_in_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="not in the torch hub cache"):
        pretrained_file(download=False)

    torch.manual_seed(2)
    data = codec.state_dict_bytes(new_model())
    prefix = hashlib.sha256(data).hexdigest()[:8]
    monkeypatch.setattr(codec, "CHECKPOINT_NAME", f"encodec_24khz-{prefix}.th")
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / f"encodec_24khz-{prefix}.th").write_bytes(data)
    assert pretrained_file(download=False) == cache / f"encodec_24khz-{prefix}.th"
    assert isinstance(load_weights_file(pretrained_file(download=False)), type(new_model()))

    (cache / f"encodec_24khz-{prefix}.th").write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="does not match"):
        pretrained_file(download=False)


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="--weights untrained"):
        pretrained_file(download=True)


def test_bandwidth_to_levels():
    assert [codec.n_quantizers(b) for b in (1.5, 3, 6, 12, 24)] == [2, 4, 8, 16, 32]
    with pytest.raises(WeightsError, match="not one of"):
        codec.n_quantizers(5)


def _marked_untrained_file(path, seed: int = 3) -> str:
    """Weights saved as this tool saves its untrained codec; returns their sha256."""
    torch.manual_seed(seed)
    data = codec.state_dict_bytes(new_model(), untrained_origin="seed=3, k-means on 9 frames of test")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_labels_are_honest_about_where_file_weights_come_from(tmp_path, monkeypatch):
    torch.manual_seed(1)
    plain = tmp_path / "plain.th"
    torch.save(new_model().state_dict(), plain)
    sha = hashlib.sha256(plain.read_bytes()).hexdigest()
    _, data, info = codec.read_weights(plain)
    assert data == plain.read_bytes() and info.sha256 == sha and info.source == "file"
    assert info.label == f"EnCodec weights from {plain.resolve()} (not the published checkpoint), weights sha256 {sha[:12]}"
    assert "pretrained" not in info.label and "UNTRAINED" not in info.label

    # only a file whose sha256 starts with the published checkpoint's prefix is called pretrained
    monkeypatch.setattr(codec, "CHECKPOINT_NAME", f"encodec_24khz-{sha[:8]}.th")
    info = codec.read_weights(plain)[2]
    assert info.published and info.label == f"pretrained EnCodec 24 kHz, weights sha256 {sha[:12]}"
    assert info.to_dict()["label"] == info.label

    # untrained weights saved by this tool stay UNTRAINED, even if their hash happened to match
    marked = tmp_path / "untrained.th"
    marked_sha = _marked_untrained_file(marked)
    monkeypatch.setattr(codec, "CHECKPOINT_NAME", f"encodec_24khz-{marked_sha[:8]}.th")
    info = codec.read_weights(marked)[2]
    assert not info.trained and not info.published and info.source == "file"
    assert info.label.startswith("UNTRAINED EnCodec 24 kHz") and info.label.endswith(marked_sha[:12])
    assert "seed=3, k-means on 9 frames of test" in info.origin and str(marked.resolve()) in info.origin


def test_marked_untrained_weights_load_into_plain_encodec(tmp_path):
    """The untrained mark needs no code of this tool to load: plain torch.load + strict load_state_dict."""
    path = tmp_path / "untrained.th"
    _marked_untrained_file(path)
    state = torch.load(path, weights_only=True)
    model = new_model()
    model.load_state_dict(state, strict=True)
    torch.manual_seed(3)
    expected = new_model().state_dict()
    assert all(torch.equal(expected[k], v) for k, v in model.state_dict().items())
    assert codec.saved_untrained_origin(state) == "seed=3, k-means on 9 frames of test"
    assert codec.saved_untrained_origin(expected) is None
