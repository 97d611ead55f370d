"""Class subspaces and principal angles against scipy, NumPy SVDs of the stacked tokens and known
answers; merge, state_dict and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from maelens.analyses.base import Batch
from maelens.analyses.subspaces import (
    ClassSubspaces,
    principal_angles,
    random_theta1,
    top_eigen,
)
from maelens.engine.conditions import Condition, RandomMask
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.masking import keep_for_images
from maelens.model.taps import Capture, Taps
from tests.conftest import tiny_model

KINDS = ("patch", "cls", "mean_patch")


def orthonormal(rng: np.random.Generator, dim: int, k: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((dim, k)))[0]


# -- principal angles ----------
@pytest.mark.parametrize("dim,ka,kb", [(20, 3, 3), (50, 10, 10), (30, 5, 8), (30, 8, 5),
                                       (10, 6, 7), (12, 12, 12), (7, 7, 3)])
def test_principal_angles_equal_scipy_on_random_bases(dim, ka, kb):
    rng = np.random.default_rng(dim * 100 + ka * 10 + kb)
    qa, qb = orthonormal(rng, dim, ka), orthonormal(rng, dim, kb)
    mine = principal_angles(qa, qb)
    reference = np.sort(scipy.linalg.subspace_angles(qa, qb))  # scipy: largest first
    assert mine.shape == (min(ka, kb),)
    assert np.all(np.diff(mine) >= 0)  # ascending: θ1 first
    np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6)
    if ka == kb == dim:  # both span R^D: every angle is 0
        np.testing.assert_allclose(mine, 0.0, atol=1e-7)


@pytest.mark.parametrize("k", [1, 4, 16])
def test_nearly_identical_subspaces_keep_their_tiny_angles(k):
    rng = np.random.default_rng(k)
    qa = orthonormal(rng, 16, k)
    qb = np.linalg.qr(qa + 1e-7 * rng.standard_normal(qa.shape))[0]
    mine = principal_angles(qa, qb)
    reference = np.sort(scipy.linalg.subspace_angles(qa, qb))
    np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6)
    if k < 16:  # angles ~1e-7: the sine formula keeps them to ~1e-9 relative
        assert 1e-9 < mine.max() < 1e-6
        np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-15)


def test_known_angles_are_recovered_from_tiny_to_right_angles():
    # Planes (e_i, e_{k+i}) rotated by θ_i, then the whole space rotated at random: the angles
    # are exactly θ. Rounding in the rotation is ~1e-16 absolute, so tiny angles keep ~1e-6
    # relative accuracy only with the sine formula (arccos of cos(1e-9) returns 0).
    theta = np.array([1e-9, 1e-7, 1e-4, 0.3, np.pi / 4, 1.2, np.pi / 2 - 1e-6])
    k, dim = len(theta), 2 * len(theta) + 3
    a, b = np.zeros((dim, k)), np.zeros((dim, k))
    a[np.arange(k), np.arange(k)] = 1.0
    b[np.arange(k), np.arange(k)] = np.cos(theta)
    b[k + np.arange(k), np.arange(k)] = np.sin(theta)
    rotation = orthonormal(np.random.default_rng(0), dim, dim)
    got = principal_angles(rotation @ a, rotation @ b)
    np.testing.assert_allclose(got, theta, rtol=1e-6, atol=1e-15)


def test_principal_angles_reject_mismatched_shapes():
    with pytest.raises(MaelensError, match="bases of one space"):
        principal_angles(np.eye(4)[:, :2], np.eye(5)[:, :2])


def test_random_subspace_baseline_is_seeded_and_plausible():
    a, b = random_theta1(64, 4, draws=20, seed=1), random_theta1(64, 4, draws=20, seed=1)
    np.testing.assert_array_equal(a, b)
    assert 0.5 < np.median(a) < np.pi / 2


# -- streamed Gram vs stacked SVD ----------
def synthetic(seed: int, n_images: int = 24, classes: int = 3, tokens: int = 6, dim: int = 12
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (L=2, B, T, D) float32 with a decaying spectrum per class, labels (B,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_images) % classes
    scales = 0.7 ** torch.arange(dim, dtype=torch.float64)
    mix = [torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0]
           for _ in range(classes)]
    hidden = torch.empty(2, n_images, tokens, dim, dtype=torch.float64)
    for b in range(n_images):
        z = torch.randn(2, tokens, dim, generator=g, dtype=torch.float64) * scales
        hidden[:, b] = z @ mix[int(labels[b])] + 0.5  # an offset: centred and raw differ
    return hidden.float(), labels


def feed(analysis: ClassSubspaces, hidden: torch.Tensor, labels: torch.Tensor,
         rows: range | list[int]) -> ClassSubspaces:
    rows = torch.as_tensor(list(rows))
    for part in rows.split(5):
        capture = Capture(keep=torch.zeros(len(part), 1, dtype=torch.int64), grid=(4, 4),
                          patch_size=8, hidden={0: hidden[0, part], 3: hidden[1, part]})
        analysis.update(capture, Batch(torch.zeros(len(part)), part, labels[part]))
    return analysis


def stacked(hidden: torch.Tensor, labels: torch.Tensor, kind: str, layer: int, cls: int
            ) -> np.ndarray:
    x = hidden[layer, labels == cls].double().numpy()  # (n, T, D)
    if kind == "patch":
        return x[:, 1:].reshape(-1, x.shape[-1])
    return x[:, 0] if kind == "cls" else x[:, 1:].mean(axis=1)


@pytest.mark.parametrize("centred", [False, True])
def test_streamed_subspaces_equal_the_svd_of_the_stacked_tokens(centred):
    # Squaring into a Gram costs relative precision eps64 (σ1/σk)² ~1e-14 here (σ3/σ1 = 0.49),
    # so the bars below (the brief's 1e-4 on singular values, 1e-6 on projectors and angles)
    # hold with room on any BLAS; measured errors are ~1e-14.
    hidden, labels = synthetic(0)
    k = 3
    analysis = feed(ClassSubspaces(k=k, centred=centred), hidden, labels, range(24))
    result = analysis.result()
    np.testing.assert_array_equal(result.arrays["layers"], [0, 3])
    np.testing.assert_array_equal(result.arrays["pairs"], [[0, 1], [0, 2], [1, 2]])
    for kind in KINDS:
        for li in range(2):
            bases = []
            for c in range(3):
                x = stacked(hidden, labels, kind, li, c)
                x = x - x.mean(axis=0) if centred else x
                _, s, vt = np.linalg.svd(x, full_matrices=False)
                bases.append(vt[:k].T)
                mine = analysis.bases(kind)[li, c]  # subspaces up to sign: compare projectors
                np.testing.assert_allclose(mine @ mine.T, bases[-1] @ bases[-1].T, atol=1e-6)
                got = result.arrays[f"{kind}_singular_values"][li, c]
                np.testing.assert_allclose(got, s[:k], rtol=1e-4)
                explained = (s[:k] ** 2).sum() / (s**2).sum()
                np.testing.assert_allclose(result.arrays[f"{kind}_variance_explained"][li, c],
                                           explained, rtol=1e-6)
            for p, (a, b) in enumerate([(0, 1), (0, 2), (1, 2)]):
                want = np.sort(scipy.linalg.subspace_angles(bases[a], bases[b]))
                np.testing.assert_allclose(result.arrays[f"{kind}_angles_rad"][li, p], want,
                                           atol=1e-6)
    np.testing.assert_array_equal(result.arrays["patch_count"], [8 * 5] * 3)


def test_subspace_projectors_through_a_masked_pass_equal_the_stacked_svd():
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    pixels, labels = torch.rand(12, 3, 32, 32, generator=g), torch.arange(12) % 2
    plan = PassPlan(model, reference=Condition("m", keep=RandomMask(0.5, 7)))
    analysis = plan.add(ClassSubspaces(layers=[1, 2], k=4, kinds=["patch"]))
    plan.feed([Batch(pixels[:7], torch.arange(7), labels[:7]),
               Batch(pixels[7:], torch.arange(7, 12), labels[7:])])
    result = analysis.result()
    keep = keep_for_images(torch.arange(12), 16, 0.5, 7)
    with torch.inference_mode():
        x = (pixels - torch.tensor(model.config.mean).view(1, -1, 1, 1)) / torch.tensor(
            model.config.std).view(1, -1, 1, 1)
        cap = model(x, taps=Taps(hidden=[1, 2], final=False), keep=keep)
    for li, layer in enumerate([1, 2]):
        for c in range(2):
            tokens = cap.hidden[layer][labels == c, 1:].double().reshape(-1, 32).numpy()
            _, s, vt = np.linalg.svd(tokens, full_matrices=False)
            np.testing.assert_allclose(result.arrays["patch_singular_values"][li, c], s[:4],
                                       rtol=1e-4)
            mine = analysis.bases("patch")[li, c]
            np.testing.assert_allclose(mine @ mine.T, vt[:4].T @ vt[:4], atol=1e-6)
    assert np.all(np.isfinite(result.arrays["patch_theta1_rad"]))


def test_lapack_subset_and_full_torch_eigh_give_the_same_top_k():
    # the full decomposition is what runs on a GPU; the subset one on the CPU
    x = torch.randn(2, 3, 40, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gram = x.transpose(-1, -2) @ x * torch.linspace(1, 3, 16, dtype=torch.float64)[:, None]
    gram = (gram + gram.transpose(-1, -2)) / 2
    values_a, vectors_a = top_eigen(gram, 4, subset=True)
    values_b, vectors_b = top_eigen(gram, 4, subset=False)
    assert values_a.shape == (2, 3, 4) and vectors_a.shape == (2, 3, 16, 4)
    np.testing.assert_allclose(values_a, values_b, rtol=1e-12)
    projector = lambda v: v @ np.swapaxes(v, -1, -2)  # noqa: E731
    np.testing.assert_allclose(projector(vectors_a), projector(vectors_b), atol=1e-10)


def test_classes_never_seen_are_left_out():
    hidden, labels = synthetic(0)
    result = feed(ClassSubspaces(k=2, num_classes=6), hidden, labels, range(24)).result()
    np.testing.assert_array_equal(result.arrays["classes"], [0, 1, 2])
    assert result.arrays["patch_singular_values"].shape == (2, 3, 2)


def test_degenerate_cls_at_the_embedding_layer_is_nan_and_listed():
    # hidden[0]'s CLS token is cls_token + pos[0] for every image: a rank-1 class "subspace".
    model = tiny_model()
    pixels, labels = torch.rand(8, 3, 32, 32), torch.arange(8) % 2
    plan = PassPlan(model)
    analysis = plan.add(ClassSubspaces(layers=[0, 1], k=2, kinds=["cls", "patch"]))
    plan.feed([Batch(pixels, torch.arange(8), labels)])
    result = analysis.result()
    assert np.isnan(result.arrays["cls_theta1_rad"][0]).all()
    assert np.isfinite(result.arrays["cls_theta1_rad"][1]).all()
    assert {"kind": "cls", "layer": 0, "class": 0} in result.meta["degenerate"]
    median = [r for r in result.rows if r.metric == "theta1_deg_median"
              and r.extra["kind"] == "cls" and r.layer == 0]
    assert np.isnan(median[0].value)


# -- merge, state_dict ----------
def assert_same_result(a, b, rtol=1e-6):
    assert a.arrays.keys() == b.arrays.keys()
    for name in a.arrays:
        np.testing.assert_allclose(a.arrays[name], b.arrays[name], rtol=rtol, atol=1e-9,
                                   err_msg=name)
    for x, y in zip(a.rows, b.rows, strict=True):
        assert (x.metric, x.layer, x.extra) == (y.metric, y.layer, y.extra)
        np.testing.assert_allclose(x.value, y.value, rtol=rtol, atol=1e-9)


@pytest.mark.parametrize("num_classes", [None, 3])
def test_two_halves_merged_equal_the_whole_in_either_order(num_classes):
    hidden, labels = synthetic(1)
    whole = feed(ClassSubspaces(k=3, num_classes=num_classes), hidden, labels, range(24))
    # shards that saw different classes: the first only classes 0 and 1 (grown to 2 classes)
    first = [i for i in range(24) if labels[i] != 2]
    second = [i for i in range(24) if labels[i] == 2]
    for order in ((first, second), (second, first)):
        a = feed(ClassSubspaces(k=3, num_classes=num_classes), hidden, labels, order[0])
        b = feed(ClassSubspaces(k=3, num_classes=num_classes), hidden, labels, order[1])
        assert_same_result(a.merge(b).result(), whole.result())
    empty = ClassSubspaces(k=3).merge(whole)  # a shard that saw nothing
    assert_same_result(empty.result(), whole.result())


def test_state_dict_round_trips_through_a_weights_only_file(tmp_path):
    hidden, labels = synthetic(2)
    analysis = feed(ClassSubspaces(k=2, centred=True), hidden, labels, range(24))
    torch.save(analysis.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    restored = ClassSubspaces(k=2, centred=True).load_state_dict(state)
    assert_same_result(restored.result(), analysis.result(), rtol=0)
    # a restored state keeps streaming: add the rest of the images
    more = feed(ClassSubspaces(k=2, centred=True), hidden, labels, range(12))
    more.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert more.result().arrays["patch_count"].tolist() == [8 * 5] * 3


# -- bad input ----------
def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("kwargs,needle", [
    ({"k": 0}, "`k`"), ({"k": 2.5}, "`k`"), ({"kinds": ["patches"]}, "`kinds`"),
    ({"kinds": "patch"}, "`kinds`"), ({"layers": "all"}, "`layers`"),
    ({"num_classes": 1}, "`num_classes`")])
def test_bad_settings_are_named(kwargs, needle):
    with pytest.raises(MaelensError, match=needle) as info:
        ClassSubspaces(**kwargs)
    one_line(info)


def test_k_beyond_a_class_rank_names_the_class_and_kind():
    hidden, labels = synthetic(0)
    rows = [i for i in range(24) if labels[i] != 1] + [1, 4]  # class 1: two images only
    analysis = feed(ClassSubspaces(k=3, kinds=["patch", "cls"]), hidden, labels, rows)
    with pytest.raises(MaelensError, match="class 1 for kind 'cls'") as info:
        analysis.result()
    assert "lower `k`" in one_line(info)
    centred = feed(ClassSubspaces(k=2, kinds=["cls"], centred=True), hidden, labels, rows)
    with pytest.raises(MaelensError, match="class 1"):  # centring removes one dimension
        centred.result()


def test_too_few_classes_or_images_are_refused():
    hidden, labels = synthetic(0)
    one_class = feed(ClassSubspaces(k=2), hidden, labels, [0, 3, 6])
    with pytest.raises(MaelensError, match="at least two classes") as info:
        one_class.result()
    one_line(info)
    single = feed(ClassSubspaces(k=2), hidden, labels, [0, 3, 6, 1])
    with pytest.raises(MaelensError, match="class 1 has a single image"):
        single.result()
    with pytest.raises(MaelensError, match="seen no batch"):
        ClassSubspaces().result()


def test_missing_or_bad_labels_and_out_of_range_layers_are_refused():
    hidden, labels = synthetic(0)
    capture = Capture(keep=torch.zeros(2, 1, dtype=torch.int64), grid=(4, 4), patch_size=8,
                      hidden={0: hidden[0, :2]})
    with pytest.raises(MaelensError, match="needs class labels"):
        ClassSubspaces().update(capture, Batch(torch.zeros(2), torch.arange(2), None))
    with pytest.raises(MaelensError, match=">= 0"):
        ClassSubspaces().update(capture, Batch(torch.zeros(2), torch.arange(2),
                                               torch.tensor([0, -1])))
    with pytest.raises(MaelensError, match="num_classes"):
        ClassSubspaces(num_classes=2).update(capture, Batch(torch.zeros(2), torch.arange(2),
                                                            torch.tensor([0, 2])))
    plan = PassPlan(tiny_model())
    plan.add(ClassSubspaces(layers=[5]))
    with pytest.raises(MaelensError, match="outside the valid layers 0..2") as info:
        plan.feed([Batch(torch.rand(2, 3, 32, 32), torch.arange(2), torch.tensor([0, 1]))])
    one_line(info)
    with pytest.raises(MaelensError, match="same `kinds`"):
        ClassSubspaces(kinds=["cls"]).merge(ClassSubspaces())


@pytest.mark.slow
def test_demo_mae_theta1_grows_from_the_first_to_the_last_layer():
    # The measured finding of the README (10 x 50 digits: 0.25° at layer 0, 9.4° at layer 6);
    # 10 x 20 digits keep the test short and the trend.
    from maelens.checkpoints.load import load_model
    from maelens.studies.inputs import load_image_set
    from maelens.studies.layerwise_geometry import PassSettings, subspace_results, theta1_medians

    images = load_image_set("mnist:test", 32, classes=10, per_class=20)
    results = subspace_results(load_model("demo:mae"), images, kinds=["patch"],
                               settings=PassSettings(mask_ratio=0.75))
    medians = theta1_medians(results, "patch")
    assert list(medians) == list(range(7))
    assert medians[6] > medians[0] + 3.0
