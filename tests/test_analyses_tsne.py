"""Patch-token sampling (seeded per image, batch-independent, stratified caps) and t-SNE
(deterministic, equal to a direct openTSNE call, neighbourhoods kept)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model

from maelens.analyses.embeddings import LayerEmbeddings
from maelens.analyses.patch_tokens import PatchTokenSample
from maelens.analyses.separability import knn_accuracy, stratified_subsample
from maelens.analyses.stack import StackActivations
from maelens.analyses.tsne import TSNESettings, tsne_embedding, tsne_layers, tsne_result
from maelens.engine.capture import iterate_batches, run_capture
from maelens.errors import MaelensError
from maelens.model.taps import Taps

FAST = {"n_iter": 60, "early_exaggeration_iter": 30}  # tiny inputs converge quickly


@pytest.fixture
def labelled(images):
    pixels = torch.cat([images, images.flip(-1)])  # 12 images, 3 classes of 4
    return pixels, torch.arange(12) % 3


def sample(model, pixels, labels, batch_size, mask_ratio=0.75, **kwargs):
    analysis = PatchTokenSample(per_image=5, seed=4, **kwargs)
    run_capture(model, iterate_batches(pixels, labels, batch_size), [analysis],
                mask_ratio=mask_ratio, seed=1)
    return analysis


def test_patch_sample_equals_the_tapped_tokens_and_ignores_batching(labelled):
    model, (pixels, labels) = tiny_model(), labelled
    runs = [sample(model, pixels, labels, bs).result().arrays for bs in (1, 5, 12)]
    for other in runs[1:]:
        for key, value in runs[0].items():
            np.testing.assert_array_equal(other[key], value)
    got = runs[0]
    stack = run_capture(model, iterate_batches(pixels, labels, 12),
                        [StackActivations(taps=Taps(hidden=None))], mask_ratio=0.75,
                        seed=1)[0].arrays
    # 16 patches at ratio 0.75 -> 4 visible per image, fewer than per_image = 5: all of them
    assert got["tokens"].shape == (3, 12 * 4, 32) and got["layers"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(got["image"], np.repeat(np.arange(12), 4))
    np.testing.assert_array_equal(got["patch"], stack["keep"].reshape(-1))
    np.testing.assert_array_equal(got["labels"], np.repeat(labels.numpy(), 4))
    expected = stack["hidden"][:, :, 1:].reshape(3, 48, 32)  # CLS excluded
    np.testing.assert_array_equal(got["tokens"], expected)


def test_unmasked_sample_is_a_seeded_subset(labelled):
    model, (pixels, labels) = tiny_model(), labelled
    got = sample(model, pixels, labels, 4, mask_ratio=0.0).result().arrays
    assert got["tokens"].shape == (3, 60, 32)
    hidden = run_capture(model, iterate_batches(pixels, labels, 12),
                         [StackActivations(taps=Taps(hidden=None))])[0].arrays["hidden"]
    image, patch = got["image"], got["patch"]
    np.testing.assert_array_equal(got["tokens"], hidden[:, image, 1 + patch])  # no mask
    assert all(len(set(patch[image == i])) == 5 for i in range(12))
    other = PatchTokenSample(per_image=5, seed=5)
    run_capture(model, iterate_batches(pixels, labels, 4), [other])
    assert not np.array_equal(other.result().arrays["patch"], patch)


def test_float16_storage_and_the_stratified_cap(labelled):
    model, (pixels, labels) = tiny_model(), labelled
    full = sample(model, pixels, labels, 6, mask_ratio=0.0).result().arrays
    half = sample(model, pixels, labels, 6, mask_ratio=0.0, dtype="float16").result().arrays
    assert half["tokens"].dtype == np.float16
    # float16 keeps 11 significant bits: relative error <= 2^-11 of each value
    np.testing.assert_allclose(half["tokens"], full["tokens"], rtol=2**-11, atol=1e-4)
    capped = sample(model, pixels, labels, 6, mask_ratio=0.0, total=31).result().arrays
    assert capped["tokens"].shape[1] == 31
    assert sorted(np.bincount(capped["labels"]).tolist()) == [10, 10, 11]
    rows = [np.flatnonzero((full["image"] == i) & (full["patch"] == p))[0]
            for i, p in zip(capped["image"], capped["patch"], strict=True)]
    np.testing.assert_array_equal(capped["tokens"], full["tokens"][:, rows])


def test_stratified_subsample_gives_small_classes_all_they_have():
    labels = np.array([0] * 3 + [1] * 50 + [2] * 50)
    rows = stratified_subsample(labels, 21, seed=0)
    assert np.bincount(labels[rows]).tolist() == [3, 9, 9]
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, stratified_subsample(labels, 21, seed=0))
    assert not np.array_equal(rows, stratified_subsample(labels, 21, seed=1))
    assert len(stratified_subsample(labels, None)) == 103


def test_patch_sample_merge_and_state_dict(labelled, tmp_path):
    model, (pixels, labels) = tiny_model(), labelled
    whole = sample(model, pixels, labels, 12).result().arrays
    first = PatchTokenSample(per_image=5, seed=4)
    second = PatchTokenSample(per_image=5, seed=4)
    batches = list(iterate_batches(pixels, labels, 5))
    run_capture(model, batches[:1], [first], mask_ratio=0.75, seed=1)
    run_capture(model, batches[1:], [second], mask_ratio=0.75, seed=1)
    merged = PatchTokenSample(per_image=5, seed=4).merge(second).merge(first)
    for key, value in merged.result().arrays.items():
        np.testing.assert_array_equal(value, whole[key])
    torch.save(merged.state_dict(), tmp_path / "state.pt")
    loaded = PatchTokenSample(per_image=5, seed=4).load_state_dict(
        torch.load(tmp_path / "state.pt", weights_only=True))
    result = loaded.result()
    assert result.meta["grid"] == [4, 4] and result.meta["patch_size"] == 8
    for key, value in result.arrays.items():
        np.testing.assert_array_equal(value, whole[key])


def test_patch_sample_rejects_bad_settings():
    with pytest.raises(MaelensError, match="per_image"):
        PatchTokenSample(per_image=0)
    with pytest.raises(MaelensError, match="dtype"):
        PatchTokenSample(dtype="bfloat16")
    with pytest.raises(MaelensError, match="total"):
        PatchTokenSample(total=0)


def blobs(n: int = 45, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return rng.standard_normal((3, 10))[labels] * 6.0 + rng.standard_normal((n, 10)), labels


def test_tsne_is_deterministic_and_equals_opentsne():
    import openTSNE

    x, labels = blobs()
    settings = TSNESettings(seed=3, perplexity=10, **FAST)
    first, second = tsne_embedding(x, settings, key=2), tsne_embedding(x, settings, key=2)
    np.testing.assert_array_equal(first, second)  # n_jobs=1: bit-identical
    assert not np.allclose(first, tsne_embedding(x, settings, key=3))
    from maelens.seeds import derive_seed

    direct = openTSNE.TSNE(perplexity=10, n_iter=60, early_exaggeration_iter=30, n_jobs=1,
                           random_state=derive_seed(3, "tsne", 2) % 2**32).fit(x)
    np.testing.assert_array_equal(first, np.asarray(direct))
    # well-separated classes stay separated: 1-NN in the map recovers every label
    assert knn_accuracy(first, labels, first, labels, k=1) == 1.0


def test_tsne_layers_shape_nan_for_constant_layer_and_perplexity_cap():
    x, _ = blobs(12)
    arrays = np.stack([np.ones_like(x), x]).astype(np.float32)
    seconds: list[float] = []
    maps = tsne_layers(arrays, seed=0, perplexity=30, n_iter=40, early_exaggeration_iter=20,
                       layers=[0, 5], seconds=seconds)
    assert maps.shape == (2, 12, 2) and maps.dtype == np.float32 and len(seconds) == 2
    assert np.isnan(maps[0]).all() and np.isfinite(maps[1]).all()
    with pytest.raises(MaelensError, match="N >= 4"):
        tsne_embedding(x[:3])
    with pytest.raises(MaelensError, match=r"\(L, N, D\)"):
        tsne_layers(x)
    with pytest.raises(MaelensError, match="perplexity"):
        TSNESettings(perplexity=0)
    with pytest.raises(MaelensError, match="n_iter"):
        TSNESettings(n_iter=0)


def test_tsne_result_of_a_pass(labelled):
    model, (pixels, labels) = tiny_model(), labelled
    embed, patches = LayerEmbeddings(layers=[1, 2]), PatchTokenSample(layers=[1, 2], per_image=3)
    run_capture(model, iterate_batches(pixels, labels, 6), [embed, patches])
    result = tsne_result(embed.result().arrays, patches.result().arrays,
                         TSNESettings(seed=0, perplexity=5, **FAST), patch_total=20)
    arrays = result.arrays
    assert arrays["cls"].shape == arrays["mean_patch"].shape == (2, 12, 2)
    assert arrays["patch"].shape == (2, 20, 2) and len(arrays["patch_labels"]) == 20
    assert sorted(np.bincount(arrays["patch_labels"]).tolist()) == [6, 7, 7]
    # 12 images cap the perplexity at (12 - 1) / 3; 20 tokens allow the 5 asked for
    assert result.meta["perplexity_used"] == {"cls": 11 / 3, "mean_patch": 11 / 3, "patch": 5.0}
    assert len(result.meta["seconds"]["patch"]) == 2
