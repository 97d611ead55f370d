"""The analysis engine: isolation of taps, merge and state, pass plans and conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row
from maelens.analyses.embeddings import LayerEmbeddings, Predictions
from maelens.analyses.stack import StackActivations
from maelens.engine.capture import iterate_batches
from maelens.engine.conditions import (
    CallerKeep,
    Condition,
    DropTokens,
    FunctionPixels,
    OccludePixels,
    PatchRanking,
    RandomMask,
)
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.masking import keep_for_images
from maelens.model.taps import Capture, Taps


@pytest.fixture
def unit_images() -> torch.Tensor:
    """(6, 3, 32, 32) RGB in [0, 1]."""
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def unit_batches(pixels: torch.Tensor, batch_size: int = 4) -> list[Batch]:
    labels = torch.arange(len(pixels)) % 2
    return list(iterate_batches(pixels, labels, batch_size))


class Recorder(Analysis):
    """Records what it was given (tap keys and pixel tensors) and the mean-patch sums."""

    def __init__(self, taps: Taps, paired: bool = False) -> None:
        super().__init__()
        self.taps, self.paired, self.seen = taps, paired, []
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("rows", None, "cat")

    def update(self, capture: Capture, batch: Batch) -> Recorder:
        self.seen.append((capture, batch.pixels.clone(), batch.index.clone()))
        self.total = self.total + capture.keep.numel()
        self.append_rows("rows", batch.index, batch.pixels.flatten(1)[:, :3])
        return self

    def update_pair(self, clean: Capture, perturbed: Capture, batch: Batch) -> Recorder:
        self.seen.append((clean, perturbed, batch))
        return self

    def result(self) -> AnalysisResult:
        return AnalysisResult("recorder", [Row("total", float(self.total))])


def test_each_analysis_sees_exactly_its_own_taps(tiny, unit_images):
    a = LayerEmbeddings(layers=[1])
    b = StackActivations(taps=Taps(attn=[2], final=False))
    c = Recorder(Taps(hidden=None, heads=[1], final=True))
    plan = PassPlan(tiny)
    for analysis in (a, b, c):
        plan.add(analysis)
    plan.run(unit_batches(unit_images))
    assert a.result().arrays["layers"].tolist() == [1]  # not 0..2, although c tapped them
    arrays = b.result().arrays
    assert "hidden" not in arrays and "final" not in arrays
    assert arrays["attn_layers"].tolist() == [2]
    capture = c.seen[0][0]
    assert sorted(capture.hidden) == [0, 1, 2] and capture.attn == {} and list(capture.heads) == [1]
    assert capture.final is not None and capture.logits is None


def test_update_over_halves_and_merge_equals_the_whole(tiny, unit_images):
    batches = unit_batches(unit_images, batch_size=2)

    def fed(analysis: Analysis, part: list[Batch]) -> Analysis:
        plan = PassPlan(tiny)
        plan.add(analysis)
        plan.feed(part)
        return analysis

    for make in (lambda: LayerEmbeddings(), Predictions,
                 lambda: StackActivations(taps=Taps(attn=[1], final=True))):
        whole = fed(make(), batches).result().arrays
        # halves in reverse order: merging is order-independent
        merged = fed(make(), batches[2:]).merge(fed(make(), batches[:2])).result().arrays
        assert whole.keys() == merged.keys()
        for key in whole:
            np.testing.assert_allclose(merged[key], whole[key], rtol=1e-6, atol=0)


def test_state_dict_survives_a_file_and_gives_the_same_result(tiny, unit_images, tmp_path):
    for make in (lambda: LayerEmbeddings(layers=[0, 2]), Predictions,
                 lambda: StackActivations(taps=Taps(hidden=[1], final=True))):
        analysis = make()
        plan = PassPlan(tiny)
        plan.add(analysis)
        plan.feed(unit_batches(unit_images))
        torch.save(analysis.state_dict(), tmp_path / "state.pt")
        restored = make().load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
        before, after = analysis.result().arrays, restored.result().arrays
        assert before.keys() == after.keys()
        for key in before:
            np.testing.assert_array_equal(before[key], after[key])


def test_generic_sum_state_merges_and_round_trips(tiny, unit_images):
    a, b, whole = (Recorder(Taps(final=False)) for _ in range(3))
    for analysis, part in ((a, slice(0, 3)), (b, slice(3, 6)), (whole, slice(0, 6))):
        plan = PassPlan(tiny)
        plan.add(analysis)
        plan.feed(unit_batches(unit_images[part]))
    assert float(a.merge(b).total) == float(whole.total) == 6 * 16
    restored = Recorder(Taps(final=False)).load_state_dict(a.state_dict())
    assert float(restored.total) == 96
    with pytest.raises(MaelensError, match="cannot merge"):
        a.merge(Predictions())


def test_plan_runs_each_condition_once_and_pairs_aligned_images(tiny, unit_images):
    calls = []
    original = tiny.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    tiny.forward = counting
    darken = Condition("darker", FunctionPixels(lambda px, idx: px * 0.5))
    flip = Condition("flipped", FunctionPixels(lambda px, idx: px.flip(-1)))
    drop = Condition("drop30", keep=DropTokens(30.0, PatchRanking("rollout")))
    plan = PassPlan(tiny)
    clean = plan.add(Recorder(Taps(final=True)))
    pairs = {c.name: plan.add(Recorder(Taps(hidden=[2], final=False), paired=True), c)
             for c in (darken, flip, drop)}
    plan.feed(unit_batches(unit_images, batch_size=4))
    assert len(calls) == 2 * (1 + 3)  # per batch: clean + 3 conditions; rollout reads clean
    assert plan.forward_calls == 8
    ref, pert, batch = pairs["darker"].seen[0]
    torch.testing.assert_close(batch.pixels, clean.seen[0][1] * 0.5)
    torch.testing.assert_close(batch.reference, clean.seen[0][1])
    assert batch.index.tolist() == [0, 1, 2, 3]
    ref, pert, batch = pairs["drop30"].seen[0]
    assert pert.keep.shape == (4, 16 - 5)  # round(16 * 0.3) = 5 patches dropped
    assert ref.keep.shape == (4, 16)


def test_rollout_drop_removes_the_most_attended_patches(tiny, unit_images):
    from maelens.perturb.rollout import attention_rollout, patch_scores

    plan = PassPlan(tiny)
    rec = plan.add(Recorder(Taps(final=False), paired=True),
                   Condition("drop", keep=DropTokens(25.0)))
    plan.feed(unit_batches(unit_images[:2]))
    with torch.inference_mode():
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (tiny.config.mean,
                                                                  tiny.config.std))
        cap = tiny((unit_images[:2] - mean) / std, taps=Taps(attn=None, final=False))
    scores = patch_scores(attention_rollout([cap.attn[k] for k in sorted(cap.attn)]))
    top = scores.argsort(dim=1, descending=True, stable=True)[:, :4]
    kept = rec.seen[0][1].keep
    for row in range(2):
        assert set(kept[row].tolist()).isdisjoint(top[row].tolist())


def test_conditions_inherit_the_reference_mask_and_keep_policies_apply(tiny, unit_images):
    plan = PassPlan(tiny, reference=Condition("masked", keep=RandomMask(0.5, seed=3)))
    ref = plan.add(Recorder(Taps(final=False)))
    blurred = plan.add(Recorder(Taps(final=False)), Condition("x", FunctionPixels(
        lambda px, idx: px.clamp(0.2, 0.8))))
    fixed = plan.add(Recorder(Taps(final=False)), Condition("fixed", keep=CallerKeep(
        torch.tensor([0, 5, 7]))))
    plan.feed(unit_batches(unit_images, batch_size=6))
    expected = keep_for_images(torch.arange(6), 16, 0.5, seed=3)
    assert torch.equal(ref.seen[0][0].keep, expected)
    assert torch.equal(blurred.seen[0][0].keep, expected)
    assert fixed.seen[0][0].keep.tolist() == [[0, 5, 7]] * 6


def test_occlusion_by_pixels_and_random_control_are_seeded_per_image(tiny, unit_images):
    ranking = PatchRanking("random", seed=5)
    plan = PassPlan(tiny)
    rec = plan.add(Recorder(Taps(final=False)), Condition("occ", OccludePixels(
        50.0, tiny.config.patch_size, ranking=ranking)))
    plan.feed(unit_batches(unit_images, batch_size=2))
    alone = PassPlan(tiny)
    rec2 = alone.add(Recorder(Taps(final=False)), Condition("occ", OccludePixels(
        50.0, tiny.config.patch_size, ranking=ranking)))
    alone.feed(unit_batches(unit_images, batch_size=6))
    first = torch.cat([seen[1] for seen in rec.seen])
    torch.testing.assert_close(first, rec2.seen[0][1])  # batch composition does not matter
    zero_fraction = (first == 0).float().mean().item()
    assert 0.45 < zero_fraction < 0.55  # half the patches zeroed


def test_bad_plans_are_named(tiny, unit_images):
    plan = PassPlan(tiny)
    with pytest.raises(MaelensError, match="paired"):
        plan.add(Recorder(Taps(), paired=True))
    with pytest.raises(MaelensError, match="no analyses"):
        plan.feed(unit_batches(unit_images))
    with pytest.raises(MaelensError, match="dtype"):
        PassPlan(tiny, dtype=torch.int8)
    normalised = PassPlan(tiny, normalise=False)
    with pytest.raises(MaelensError, match="already normalised"):
        normalised.add(Recorder(Taps()), Condition("x", FunctionPixels(lambda p, i: p)))
    plan.add(Recorder(Taps()), Condition("x", FunctionPixels(lambda p, i: p)))
    with pytest.raises(MaelensError, match="two different conditions"):
        plan.add(Recorder(Taps()), Condition("x", FunctionPixels(lambda p, i: p + 1)))
    masked = PassPlan(tiny, reference=Condition("m", keep=RandomMask(0.5)))
    masked.add(Recorder(Taps(), paired=True), Condition("d", keep=DropTokens(10.0)))
    with pytest.raises(MaelensError, match="unmasked reference"):
        masked.feed(unit_batches(unit_images))


def test_one_mask_generator_for_capture_extract_and_training(tiny, unit_images):
    """Image i's mask depends on (seed, purpose, i) only: capture, extract and training agree."""
    from maelens.studies.extract import ExtractSettings, extract

    settings = ExtractSettings(kinds=("final",), layers=None, mask_ratio=0.75, seed=11,
                               batch_size=4)
    exported = extract(tiny, unit_images, settings)["keep"]
    direct = keep_for_images(torch.arange(6), 16, 0.75, seed=11)
    assert np.array_equal(exported, direct.numpy())
    alone = keep_for_images([4], 16, 0.75, seed=11)
    assert torch.equal(alone[0], direct[4])
    training = keep_for_images([4], 16, 0.75, seed=11, purpose=("train", 0))
    assert not torch.equal(training[0], direct[4])  # another purpose draws another mask
    huge = keep_for_images([0], 16, 0.75, seed=10**30)  # any seed: hashed, no overflow
    assert huge.shape == (1, 4)
