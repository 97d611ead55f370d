"""Common head features (Eq. 2-3): a hand-worked case with ties, and an independent
set-based computation on synthetic head outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maelens.analyses.head_features import HeadCommonFeatures, top_k_features
from maelens.engine.conditions import Condition, FunctionPixels
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from tests.conftest import tiny_model
from tests.robustness_helpers import batch, capture, check_halves_and_round_trip, image_batches


def heads_capture(rows: list[list[float]], cls: float = 100.0) -> object:
    """One layer (1), one head, d_head 4: each image's single patch row is `rows[i]`; the CLS
    row puts `cls` on feature 3 (must be ignored by default)."""
    patch = torch.tensor(rows, dtype=torch.float32)[:, None, None, :]  # (B, 1, H=1, 4)
    cls_row = torch.zeros_like(patch)
    cls_row[..., 3] = cls
    return capture(heads={1: torch.cat([cls_row, patch], dim=1)}, grid=(1, 1))


def test_top_k_breaks_magnitude_ties_by_lower_index():
    x = torch.tensor([1.0, -3.0, 3.0, 2.0, -2.0, 0.0])
    assert top_k_features(x, 4).tolist() == [1, 2, 3, 4]
    assert top_k_features(torch.zeros(5), 2).tolist() == [0, 1]


def test_hand_worked_example_with_ties():
    # Class 0 clean top-2: {0,1} (|3| = |-3|), {1,2} (three 2s: lowest two), {0,3}
    # -> counts f0 2, f1 2, f2 1, f3 1; 60 % of 3 images = 1.8 -> common {0, 1}.
    # Class 0 perturbed: {0,1}, {2,3}, {2,3} -> common {2, 3}; intersection empty.
    # Class 1 (one image): clean [0,1,0,0] -> {1, 0}; perturbed all zero -> {0, 1}; both kept.
    clean = heads_capture([[3, -3, 1, 0], [0, 2, -2, 2], [5, 0, 0, 5], [0, 1, 0, 0]])
    pert = heads_capture([[1, 1, 1, 1], [0, 0, 4, -4], [0, 0, 3, 1], [0, 0, 0, 0]])
    out = HeadCommonFeatures(top_k=2).update_pair(clean, pert, batch(range(4), [0, 0, 0, 1])
                                                  ).result()
    np.testing.assert_array_equal(out.arrays["c_clean"], [[[2, 2]]])  # (L, H, C)
    np.testing.assert_array_equal(out.arrays["c_pert"], [[[2, 2]]])
    np.testing.assert_array_equal(out.arrays["c_common"], [[[0, 2]]])
    np.testing.assert_array_equal(out.arrays["delta_c"], [[[2, 0]]])
    rows = {(r.metric, r.layer, r.head): r.value for r in out.rows}
    assert rows["delta_c_mean", None, None] == 1.0
    assert rows["c_common", 1, 0] == 1.0  # mean over the two classes
    np.testing.assert_array_equal(out.arrays["class_images"], [3, 1])
    # With the CLS row averaged in, feature 3 (CLS 100) tops every image.
    with_cls = HeadCommonFeatures(top_k=1, include_cls=True).update_pair(
        clean, pert, batch(range(4), [0, 0, 0, 1])).result()
    np.testing.assert_array_equal(with_cls.arrays["c_common"], [[[1, 1]]])


def test_threshold_counts_exactly_at_the_boundary():
    # 7 of 10 images have feature 0 on top; 0.7 * 10 is 7.000000000000001 in floating point.
    rows = [[1, 0, 0, 0]] * 7 + [[0, 1, 0, 0]] * 3
    out = HeadCommonFeatures(top_k=1, threshold=0.7).update_pair(
        heads_capture(rows), heads_capture(rows), batch(range(10), [0] * 10)).result()
    assert out.arrays["c_clean"].item() == 1


def reference_counts(clean: np.ndarray, pert: np.ndarray, labels: np.ndarray, k: int,
                     threshold: float) -> dict[str, np.ndarray]:
    """Sets, loops and Python's sort: clean / pert (N, L, T, H, d) head outputs -> (L, H, C)."""
    N, L, _, H, d = clean.shape
    classes = sorted(set(labels.tolist()))
    out = {name: np.zeros((L, H, len(classes))) for name in ("c_clean", "c_pert", "c_common")}
    for ci, c in enumerate(classes):
        members = [i for i in range(N) if labels[i] == c]
        for layer in range(L):
            for h in range(H):
                common = {}
                for name, o in (("clean", clean), ("pert", pert)):
                    tops = []
                    for i in members:
                        m = o[i, layer, 1:, h].mean(axis=0)  # visible patch rows
                        tops.append(set(sorted(range(d), key=lambda f: (-abs(m[f]), f))[:k]))
                    common[name] = {f for f in range(d)
                                    if sum(f in t for t in tops) >= threshold * len(members)}
                out["c_clean"][layer, h, ci] = len(common["clean"])
                out["c_pert"][layer, h, ci] = len(common["pert"])
                out["c_common"][layer, h, ci] = len(common["clean"] & common["pert"])
    return out


def test_matches_an_independent_set_computation_with_many_ties(tmp_path):
    gen = torch.Generator().manual_seed(0)
    # Small integers: the means are exact multiples of 1/2 in any summation order, so
    # magnitude ties are frequent and identical in both computations.
    clean = torch.randint(-2, 3, (12, 2, 3, 3, 6), generator=gen).double()  # (N, L, T, H, d)
    pert = torch.randint(-2, 3, (12, 2, 3, 3, 6), generator=gen).double()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 2, 2, 0, 2])
    expected = reference_counts(clean.numpy(), pert.numpy(), labels.numpy(), 2, 0.5)

    def cap(o: torch.Tensor, part: slice):
        return capture(heads={layer + 1: o[part, layer] for layer in range(2)}, grid=(1, 2))

    def feed(analysis: HeadCommonFeatures, part: slice) -> None:
        idx = torch.arange(12)[part]
        analysis.update_pair(cap(clean, part), cap(pert, part), batch(idx, labels[part]))

    out = check_halves_and_round_trip(lambda: HeadCommonFeatures(top_k=2, threshold=0.5),
                                      feed, 12, tmp_path)
    for name, value in expected.items():
        np.testing.assert_array_equal(out.arrays[name], value, err_msg=name)
    np.testing.assert_array_equal(out.arrays["delta_c"], expected["c_clean"] - expected["c_common"])
    np.testing.assert_array_equal(out.arrays["layers"], [1, 2])
    # Shards that saw different numbers of classes (labels 0..2 vs only 0): merge pads them.
    def part(rows: slice) -> HeadCommonFeatures:
        analysis = HeadCommonFeatures(top_k=2, threshold=0.5)
        feed(analysis, rows)
        return analysis

    assert len(part(slice(6, 8)).class_images) == 1
    for merged in (part(slice(6, 8)).merge(part(slice(0, 5))),
                   part(slice(0, 5)).merge(part(slice(6, 8)))):
        np.testing.assert_array_equal(merged.class_images, [4, 2, 1])
        np.testing.assert_array_equal(merged.hits_clean, part(slice(0, 5)).hits_clean
                                      + torch.nn.functional.pad(
                                          part(slice(6, 8)).hits_clean, (0,) * 7 + (2,)))


def test_tiny_model_through_a_pass_plan(tmp_path):
    model = tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False)
    gen = torch.Generator().manual_seed(6)
    pixels, labels = torch.rand(8, 3, 32, 32, generator=gen), torch.arange(8) % 2
    same = Condition("same", pixels=FunctionPixels(lambda px, idx: px.clone()))

    def feed(analysis: HeadCommonFeatures, part: slice) -> None:
        plan = PassPlan(model)
        plan.add(analysis, same)
        plan.feed(image_batches(pixels, labels, part))

    out = check_halves_and_round_trip(lambda: HeadCommonFeatures(top_k=3), feed, 8, tmp_path)
    assert out.arrays["c_clean"].shape == (2, 4, 2)  # (L, H, C); d_head 8
    # An identity "perturbation": every clean common feature is retained.
    np.testing.assert_array_equal(out.arrays["c_common"], out.arrays["c_clean"])
    assert {r.metric: r.value for r in out.rows}["delta_c_mean"] == 0.0


def test_bad_input_fails_with_one_line():
    for kwargs, match in (({"top_k": 0}, "`top_k`"), ({"threshold": 0.0}, "`threshold`"),
                          ({"threshold": 1.5}, "`threshold`")):
        with pytest.raises(MaelensError, match=match):
            HeadCommonFeatures(**kwargs)
    cap = heads_capture([[1, 2, 3, 4]])
    with pytest.raises(MaelensError, match="`top_k`=10 exceeds the head width d_head=4"):
        HeadCommonFeatures().update_pair(cap, cap, batch([0], [0]))
    with pytest.raises(MaelensError, match="labels"):
        HeadCommonFeatures(top_k=2).update_pair(cap, cap, batch([0]))
    with pytest.raises(MaelensError, match="saw no image"):
        HeadCommonFeatures().result()
