"""SSL storage codings (`store.sslstorage`): parsed, sized, and round-tripped within their bounds,
checked against independent computations (float64 arithmetic, numpy's SVD)."""

from __future__ import annotations

import numpy as np
import pytest

from store.sslstorage import SSLStorage, StorageError, dequantize, fit_pca, quantize


def test_options_parse_and_size():
    assert SSLStorage.parse(None).plain and SSLStorage.parse("float16").name == "float16"
    assert SSLStorage.parse("int8") == SSLStorage(0, True)
    assert SSLStorage.parse("PCA:256") == SSLStorage(256, False)
    assert SSLStorage.parse("pca:64:int8").name == "pca:64:int8"
    for bad in ("int4", "pca", "pca:0", "pca:x", "pca:8:int4", "pca:8:int8:1"):
        with pytest.raises(StorageError, match="float16, int8, pca:K"):
            SSLStorage.parse(bad)
    # bytes per frame of WavLM-Large's 12 x 1024: 24 KiB as float16
    assert SSLStorage().bytes_per_frame(12, 1024) == 12 * 1024 * 2
    assert SSLStorage.parse("int8").bytes_per_frame(12, 1024) == 12 * 1026
    assert SSLStorage.parse("pca:256").bytes_per_frame(12, 1024) == 12 * 256 * 2
    assert SSLStorage.parse("pca:256:int8").bytes_per_frame(12, 1024) == 12 * 258
    with pytest.raises(StorageError, match="more than the model's 32"):
        SSLStorage.parse("pca:64").check(32)
    # a stream recording no storage (made before the option) is float16
    assert SSLStorage.from_source({"layers": [1]}).plain and SSLStorage.from_source(None).plain
    assert SSLStorage.from_source({"storage": SSLStorage.parse("pca:8:int8").to_attrs()}) == SSLStorage(8, True)


def test_int8_error_is_at_most_half_a_step_of_each_frame_and_layer():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 3, 40)) * rng.uniform(0.01, 100, (50, 3, 1))).astype(np.float32)
    x[4, 1] = 0.0  # an all-zero row stays zero
    stored = quantize(x)
    assert stored.dtype == np.int8 and stored.shape == (50, 3, 42)
    back = dequantize(stored)
    step = np.abs(x.astype(np.float64)).max(axis=-1, keepdims=True) / 127  # the scale, in float64
    err = np.abs(back.astype(np.float64) - x)
    assert (err <= step / 2 * (1 + 2**-9) + 1e-30).all()  # float16's rounding of the scale: up to 2^-10 relative
    assert (back[4, 1] == 0).all()
    assert np.abs(stored[..., :-2]).max() == 127  # the largest value of each row uses the full range


def test_pca_spans_the_leading_subspace_and_round_trips():
    rng = np.random.default_rng(1)
    # 2 layers of 24 dimensions whose frames lie near a 5-dimensional subspace plus small noise
    frames = np.einsum("fk,lkh->flh", rng.standard_normal((400, 5)) * [5, 4, 3, 2, 1],
                       rng.standard_normal((2, 5, 24))) + 3.0 + rng.standard_normal((400, 2, 24)) * 0.01
    mean, basis, kept = fit_pca(frames, 5)
    assert basis.shape == (2, 24, 5) and (kept > 0.999).all()
    for layer in range(2):
        np.testing.assert_allclose(basis[layer].T @ basis[layer], np.eye(5), atol=1e-5)
        centred = frames[:, layer] - frames[:, layer].mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)  # the independent subspace
        projector = vt[:5].T @ vt[:5]
        np.testing.assert_allclose(basis[layer] @ basis[layer].T, projector, atol=1e-4)
    # decoded = the projection onto the subspace, off by the coefficients' rounding only (the basis is
    # orthonormal): at most sqrt(K) x half a step of float16 (2^-11 relative) or of the int8 scale
    exact = np.stack([frames[:, layer] @ np.eye(24) for layer in range(2)], axis=1)
    for layer in range(2):
        m = frames[:, layer].mean(axis=0)
        _, _, vt = np.linalg.svd(frames[:, layer] - m, full_matrices=False)
        exact[:, layer] = m + (frames[:, layer] - m) @ vt[:5].T @ vt[:5]
    coefficients = np.einsum("flh,lhk->flk", frames - mean, basis)
    top = np.abs(coefficients).max(axis=-1)
    for name, half_step in (("pca:5", top * 2**-11), ("pca:5:int8", top / 254 * (1 + 2**-9))):
        coding = SSLStorage.parse(name)
        stored = coding.encode(frames, mean, basis)
        assert stored.shape == (400, 2, 5 + (2 if coding.int8 else 0)) and stored.dtype == coding.dtype
        err = np.linalg.norm(coding.decode(stored, mean, basis) - exact, axis=-1)
        assert (err <= np.sqrt(5) * half_step + 1e-4).all()
    # all components: float16's rounding of the coefficients only
    full = SSLStorage(24)
    mean, basis, _ = fit_pca(frames, 24)
    back = full.decode(full.encode(frames, mean, basis), mean, basis)
    np.testing.assert_allclose(back, frames, atol=0.02)

