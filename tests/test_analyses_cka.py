"""Linear CKA: known answers, invariances, independent NumPy formulas, and the streamed sums
against the same numbers computed from stacked activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model

from maelens.analyses.base import Batch
from maelens.analyses.cka import StreamedCKA, StreamedCrossCKA, cka_matrix, linear_cka
from maelens.analyses.stack import StackActivations
from maelens.engine.capture import iterate_batches, run_capture
from maelens.engine.conditions import Condition, RandomMask
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.taps import Taps


def gram_hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Independent biased CKA: HSIC = tr(K H L H) / (n - 1)^2 on linear Gram matrices."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def song_unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. (2012), eq. 5: the unbiased HSIC estimator, written out term by term."""
    n = len(k)
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    one = np.ones(n)
    return (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * one @ k @ l_ @ one) / (n * (n - 3))


def song_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    k, l_ = x @ x.T, y @ y.T
    hsic = song_unbiased_hsic
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def random_pair(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 12)) + 3.0  # a mean offset: centring must matter
    y = x @ rng.standard_normal((12, 7)) + 0.8 * rng.standard_normal((n, 7))
    return x, y


def test_known_answers_and_invariances():
    x, y = random_pair()
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    for debiased in (False, True):
        assert linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
        base = linear_cka(x, y, debiased)
        assert 0.1 < base < 1.0
        # orthogonal transform and isotropic scaling of either side: same CKA (float64 round-off)
        assert linear_cka(x @ q, y, debiased) == pytest.approx(base, rel=1e-10)
        assert linear_cka(7.5 * x, 0.01 * y, debiased) == pytest.approx(base, rel=1e-10)
        # ... but not a general invertible map
        assert abs(linear_cka(x @ np.diag(np.arange(1, 13.0)), y, debiased) - base) > 1e-3
    assert np.isnan(linear_cka(np.ones((10, 3)), y[:10]))  # constant side: undefined


def test_equal_to_independent_numpy_formulas():
    for seed in range(3):
        x, y = random_pair(30, seed)
        # biased: feature space (ours) vs Gram space with the centring matrix
        assert linear_cka(x, y) == pytest.approx(gram_hsic_cka(x, y), rel=1e-10)
        # debiased: U-centred Gram (ours) vs Song et al.'s explicit formula
        assert linear_cka(x, y, debiased=True) == pytest.approx(song_debiased_cka(x, y),
                                                                rel=1e-9)
    a = np.stack([x, x * 2.0, x + y @ np.ones((7, 12))])
    matrix = cka_matrix(a, debiased=True)
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    assert matrix[0, 2] == pytest.approx(song_debiased_cka(a[0], a[2]), rel=1e-9)


def test_bad_input_is_named():
    x, y = random_pair(3)
    with pytest.raises(MaelensError, match="at least 4 images"):
        linear_cka(x, y, debiased=True)
    with pytest.raises(MaelensError, match="same samples"):
        linear_cka(x, y[:2])
    a = np.zeros((2, 5, 3))
    with pytest.raises(MaelensError, match="different images"):
        cka_matrix(a, a, index_a=np.arange(5), index_b=np.arange(5)[::-1])
    with pytest.raises(MaelensError, match="GiB"):
        cka_matrix(np.zeros((2, 100, 3)), max_bytes=1000)
    with pytest.raises(MaelensError, match="kind"):
        StreamedCKA(kind="everything")


def stacked(model, images, mask_ratio: float = 0.0) -> dict[str, np.ndarray]:
    taps = Taps(hidden=None, final=False)
    return run_capture(model, iterate_batches(images, batch_size=6), [StackActivations(taps=taps)],
                       mask_ratio=mask_ratio, seed=2)[0].arrays


def by_kind(hidden: np.ndarray, kind: str) -> np.ndarray:
    """(L, N, T, D) float32 tokens -> (L, S, D) float64 samples of `kind`, in NumPy."""
    hidden = hidden.astype(np.float64)
    if kind == "cls":
        return hidden[:, :, 0]
    if kind == "mean_patch":
        return hidden[:, :, 1:].mean(axis=2)
    return hidden[:, :, 1:].reshape(len(hidden), -1, hidden.shape[-1])


@pytest.mark.parametrize("kind", ["mean_patch", "tokens"])
def test_streamed_equals_cka_of_stacked_features(kind, images):
    model = tiny_model()
    pixels = torch.cat([images, images.flip(-1), images.flip(-2)])  # 18 images
    streamed = StreamedCKA(kind=kind)
    run_capture(model, iterate_batches(pixels, batch_size=5), [streamed], mask_ratio=0.5, seed=2)
    expected = cka_matrix(by_kind(stacked(model, pixels, 0.5)["hidden"], kind), debiased=False)
    got = streamed.result()
    # Same float32 tokens on both sides; only float64 summation order differs.
    np.testing.assert_allclose(got.arrays["cka"], expected, rtol=1e-9, atol=1e-12)
    assert got.arrays["layers_a"].tolist() == [0, 1, 2]
    assert len(got.rows) == 9 and got.rows[1].extra["layer_b"] == 1


def test_cls_at_layer_zero_is_constant_and_gives_nan(images):
    streamed = StreamedCKA(kind="cls")
    run_capture(tiny_model(), iterate_batches(images, batch_size=6), [streamed])
    matrix = streamed.result().arrays["cka"]
    assert np.isnan(matrix[0]).all() and matrix[1, 1] == pytest.approx(1.0)


def test_merge_of_halves_and_state_dict_round_trip(images, tmp_path):
    model = tiny_model()
    whole, first, second = StreamedCKA(), StreamedCKA(), StreamedCKA()
    run_capture(model, iterate_batches(images, batch_size=3), [whole])
    run_capture(model, iterate_batches(images[:3], batch_size=3), [first])
    run_capture(model, iterate_batches(images[3:], batch_size=3), [second])
    merged = StreamedCKA().merge(second).merge(first)  # empty first, any order
    np.testing.assert_allclose(merged.result().arrays["cka"], whole.result().arrays["cka"],
                               rtol=1e-6)
    torch.save(whole.state_dict(), tmp_path / "state.pt")
    loaded = StreamedCKA().load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    np.testing.assert_array_equal(loaded.result().arrays["cka"], whole.result().arrays["cka"])


def feed_both(cross: StreamedCrossCKA, model_a, model_b, batches: list[Batch],
              mask_ratio: float = 0.0) -> None:
    reference = Condition("masked", keep=RandomMask(mask_ratio, seed=2)) if mask_ratio else None
    plans = []
    for model, side in ((model_a, cross.side_a), (model_b, cross.side_b)):
        plan = (PassPlan(model, reference=reference, normalise=False) if reference
                else PassPlan(model, normalise=False))
        plan.add(side)
        plans.append(plan)
    for batch in batches:
        plans[0].feed([batch])
        plans[1].feed([batch])


@pytest.mark.parametrize("kind", ["mean_patch", "tokens"])
def test_cross_model_streamed_equals_arrays(kind, images, tmp_path):
    a, b = tiny_model(0), tiny_model(1, depth=3, embed_dim=16, num_heads=2)
    pixels = torch.cat([images, images.flip(-1)])
    cross = StreamedCrossCKA(kind=kind)
    batches = list(iterate_batches(pixels, batch_size=5))
    feed_both(cross, a, b, batches, mask_ratio=0.5)
    feats_a = by_kind(stacked(a, pixels, 0.5)["hidden"], kind)
    feats_b = by_kind(stacked(b, pixels, 0.5)["hidden"], kind)
    got = cross.result().arrays
    assert got["cka"].shape == (3, 4)
    np.testing.assert_allclose(got["cka"], cka_matrix(feats_a, feats_b, debiased=False),
                               rtol=1e-9, atol=1e-12)
    # halves + merge, and a state-dict round trip
    halves = [StreamedCrossCKA(kind=kind), StreamedCrossCKA(kind=kind)]
    feed_both(halves[0], a, b, batches[:1], 0.5)
    feed_both(halves[1], a, b, batches[1:], 0.5)
    merged = StreamedCrossCKA(kind=kind).merge(halves[1]).merge(halves[0])
    np.testing.assert_allclose(merged.result().arrays["cka"], got["cka"], rtol=1e-6)
    torch.save(cross.state_dict(), tmp_path / "state.pt")
    loaded = StreamedCrossCKA(kind=kind).load_state_dict(
        torch.load(tmp_path / "state.pt", weights_only=True))
    np.testing.assert_array_equal(loaded.result().arrays["cka"], got["cka"])


def test_cross_model_refuses_unpaired_batches(images):
    cross = StreamedCrossCKA()
    plan_a, plan_b = PassPlan(tiny_model(0), normalise=False), PassPlan(tiny_model(1),
                                                                        normalise=False)
    plan_a.add(cross.side_a)
    plan_b.add(cross.side_b)
    plan_a.feed([Batch(images[:3], torch.arange(3))])
    with pytest.raises(MaelensError, match="same images in the same order"):
        plan_b.feed([Batch(images[3:], torch.arange(3, 6))])


def test_memory_limit_is_checked_before_accumulating(images):
    streamed = StreamedCKA(max_state_bytes=1000)
    with pytest.raises(MaelensError, match="fewer `--layers`"):
        run_capture(tiny_model(), iterate_batches(images, batch_size=6), [streamed])
