"""Eq. 1 alignment: cosine and norm change against SciPy / NumPy, split by correctness."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance
import torch

from maelens.analyses.alignment import EmbeddingAlignment
from maelens.engine.conditions import Condition, FunctionPixels
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.taps import Taps
from maelens.perturb.blur import gaussian_blur
from tests.conftest import tiny_model
from tests.robustness_helpers import batch, capture, check_halves_and_round_trip, image_batches

BLUR = Condition("blur", pixels=FunctionPixels(lambda px, idx: gaussian_blur(px, 5, 2.0)))


def reference(clean: np.ndarray, pert: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image cosine (SciPy) and | |pert| - |clean| | (NumPy) of (N, D) embeddings."""
    clean, pert = np.asarray(clean, np.float64), np.asarray(pert, np.float64)
    cos = np.array([1 - scipy.spatial.distance.cosine(a, b)
                    for a, b in zip(clean, pert, strict=True)])
    return cos, np.abs(np.linalg.norm(pert, axis=1) - np.linalg.norm(clean, axis=1))


def test_cosine_norms_and_split_on_hand_made_tokens():
    gen = torch.Generator().manual_seed(0)
    clean, pert = torch.randn(2, 6, 5, 8, generator=gen)  # (B, T, D) each
    logits = torch.randn(6, 3, generator=gen)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = EmbeddingAlignment(bootstrap=0).update_pair(
        capture(clean, logits=logits), capture(pert, logits=logits), batch(range(6), labels)
    ).result()
    cos, diff = reference(clean[:, 1:].double().mean(1).numpy(),
                          pert[:, 1:].double().mean(1).numpy())
    np.testing.assert_allclose(out.arrays["cosine"], cos, rtol=1e-12)
    np.testing.assert_allclose(out.arrays["norm_diff"], diff, rtol=1e-12)
    correct = (logits.argmax(1) == labels).numpy()
    np.testing.assert_array_equal(out.arrays["correct"], correct)
    rows = {(r.metric, r.extra["split"]): r for r in out.rows}
    for split, mask in (("all", np.ones(6, bool)), ("correct", correct), ("wrong", ~correct)):
        assert rows["cosine_mean", split].value == pytest.approx(cos[mask].mean(), rel=1e-12)
        assert rows["norm_diff_mean", split].value == pytest.approx(diff[mask].mean(), rel=1e-12)
        assert rows["count", split].value == mask.sum()
    assert out.meta["layer"] == 2 and "before the final" in out.meta["embedding"]


def test_pooled_source_without_classifier_has_no_split():
    gen = torch.Generator().manual_seed(1)
    clean, pert = torch.randn(2, 4, 6, generator=gen)
    out = EmbeddingAlignment(source="pooled", classify=False, bootstrap=100).update_pair(
        capture(pooled=clean), capture(pooled=pert), batch(range(4))).result()
    cos, _ = reference(clean.numpy(), pert.numpy())
    np.testing.assert_allclose(out.arrays["cosine"], cos, rtol=1e-12)
    assert {r.extra["split"] for r in out.rows} == {"all"} and "correct" not in out.arrays
    assert out.meta["source"] == "pooled" and out.meta["layer"] == -1
    row = out.rows[0]
    assert row.ci_low < row.value < row.ci_high


def test_identical_inputs_give_cosine_one_in_bfloat16():
    tokens = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(2)).bfloat16()
    out = EmbeddingAlignment(classify=False, bootstrap=0).update_pair(
        capture(tokens), capture(tokens.clone()), batch(range(3))).result()
    np.testing.assert_allclose(out.arrays["cosine"], 1.0, rtol=1e-12)  # float64 maths
    np.testing.assert_array_equal(out.arrays["norm_diff"], 0.0)


def test_tiny_model_blur_matches_direct_forwards(tmp_path):
    model = tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False)
    gen = torch.Generator().manual_seed(4)
    pixels, labels = torch.rand(9, 3, 32, 32, generator=gen), torch.randint(0, 4, (9,),
                                                                           generator=gen)

    def feed(analysis: EmbeddingAlignment, part: slice) -> None:
        plan = PassPlan(model)
        plan.add(analysis, BLUR)
        plan.feed(image_batches(pixels, labels, part))

    out = check_halves_and_round_trip(lambda: EmbeddingAlignment(layer=1, bootstrap=200),
                                      feed, 9, tmp_path)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (model.config.mean,
                                                             model.config.std))
    taps = Taps(hidden=[1], final=False, logits=True)
    with torch.inference_mode():
        clean = model((pixels - mean) / std, taps=taps)
        blurred = model((gaussian_blur(pixels, 5, 2.0) - mean) / std, taps=taps)
    cos, diff = reference(clean.mean_patch(1).double().numpy(),
                          blurred.mean_patch(1).double().numpy())
    # Same float32 forward in both paths; only the float64 reduction order differs.
    np.testing.assert_allclose(out.arrays["cosine"], cos, rtol=1e-6)
    np.testing.assert_allclose(out.arrays["norm_diff"], diff, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.arrays["correct"],
                                  (blurred.logits.argmax(1) == labels).numpy())
    assert out.meta["layer"] == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"source": "cls"}, "`source`"), ({"source": "pooled", "layer": 3}, "`layer`"),
    ({"layer": 1.5}, "`layer`"), ({"bootstrap": "many"}, "`bootstrap`"),
    ({"classes": [2, 2]}, "`classes`"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(MaelensError, match=match):
        EmbeddingAlignment(**kwargs)


def test_classify_needs_logits_and_labels():
    tokens = torch.randn(2, 5, 8)
    with pytest.raises(MaelensError, match="classify=True.*classifier head"):
        EmbeddingAlignment().update_pair(capture(tokens), capture(tokens), batch([0, 1], [0, 1]))
    logits = torch.randn(2, 3)
    with pytest.raises(MaelensError, match="labels"):
        EmbeddingAlignment().update_pair(capture(tokens, logits=logits),
                                         capture(tokens, logits=logits), batch([0, 1]))
    assert EmbeddingAlignment().taps.logits and not EmbeddingAlignment(classify=False).taps.logits


@pytest.mark.slow
def test_demo_finetuned_blur_study_is_consistent():
    """The four analyses on one pass plan over 60 MNIST digits (demo:finetuned, k5 s2 blur)."""
    from maelens.analyses.accuracy import Accuracy
    from maelens.analyses.head_features import HeadCommonFeatures
    from maelens.analyses.mask_invariance import MaskInvariance
    from maelens.checkpoints.load import load_model
    from maelens.engine.condition_sets import mask_invariance_conditions
    from maelens.studies.inputs import load_image_set

    images = load_image_set("mnist:test", 32, classes=10, per_class=6)
    plan = PassPlan(load_model("demo:finetuned"))
    clean, blurred = plan.add(Accuracy(bootstrap=200)), plan.add(Accuracy(bootstrap=200), BLUR)
    align = plan.add(EmbeddingAlignment(bootstrap=200), BLUR)
    heads = plan.add(HeadCommonFeatures(), BLUR)
    inv = MaskInvariance(bootstrap=200)
    for cond in mask_invariance_conditions(0.75, k_masks=3):
        plan.add(inv, cond)
    plan.feed(images.batches(32))
    assert clean.result().rows[0].value >= 90.0  # the demo model reaches 98 % on the split
    out = align.result()
    rows = {(r.metric, r.extra["split"]): r.value for r in out.rows}
    np.testing.assert_array_equal(out.arrays["correct"], blurred.result().arrays["correct"])
    assert out.arrays["cosine"].min() >= -1.0 and out.arrays["cosine"].max() <= 1.0 + 1e-12
    if rows["count", "wrong"] > 0:  # the paper's finding: misclassified images turn further
        assert rows["cosine_mean", "correct"] > rows["cosine_mean", "wrong"]
    counts = heads.result().arrays
    assert counts["c_clean"].shape == (6, 3, 10) and (counts["delta_c"] >= 0).all()
    assert 0.0 < {r.metric: r.value for r in inv.result().rows}["pairwise_cosine_mean"] < 1.0
