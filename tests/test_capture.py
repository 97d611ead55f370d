from __future__ import annotations

import numpy as np
import pytest
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Row
from maelens.analyses.stack import StackActivations
from maelens.engine.capture import Batch, iterate_batches, run_capture
from maelens.errors import MaelensError
from maelens.model.masking import keep_for_images
from maelens.model.taps import Capture, Taps, TapStore


class MeanPatchPerLayer(Analysis):
    """A minimal streaming analysis: running sum of mean-patch embeddings per layer."""

    def __init__(self, layers: list[int]) -> None:
        super().__init__()
        self.taps = Taps(hidden=layers, final=False)
        self.sums: dict[int, torch.Tensor] = {}

    def update(self, capture: Capture, batch: Batch) -> MeanPatchPerLayer:
        for layer in self.taps.hidden:
            value = capture.mean_patch(layer).double().sum(0)
            self.sums[layer] = self.sums.get(layer, 0) + value
        return self

    def result(self) -> AnalysisResult:
        return AnalysisResult("sums", [Row("sum", float(v.sum()), layer=k)
                                       for k, v in self.sums.items()],
                              arrays={str(k): v.numpy() for k, v in self.sums.items()})


def test_one_pass_feeds_several_analyses_the_union_of_their_taps(tiny, images):
    calls = []
    original = tiny.forward

    def spy(*args, **kwargs):
        calls.append(kwargs["taps"].resolve(tiny.depth))
        return original(*args, **kwargs)

    tiny.forward = spy
    a, b = MeanPatchPerLayer([1]), StackActivations(len(images), Taps(attn=[2], final=True))
    sums, arrays = run_capture(tiny, iterate_batches(images, batch_size=4), [a, b])
    assert len(calls) == 2  # two batches, one pass each
    assert calls[0].hidden == {1} and calls[0].attn == {2} and calls[0].final
    with torch.inference_mode():
        ref = original(images, taps=Taps(hidden=[1], attn=[2]))
    sums, arrays = sums.arrays, arrays.arrays
    torch.testing.assert_close(torch.from_numpy(sums["1"]), ref.mean_patch(1).double().sum(0))
    np.testing.assert_allclose(arrays["attn"][0], ref.attn[2].numpy(), atol=1e-6)
    np.testing.assert_allclose(arrays["final"], ref.final.numpy(), atol=1e-5)
    assert arrays["attn_layers"].tolist() == [2]


def test_masks_depend_on_seed_and_image_not_on_batching(tiny, images):
    taps = Taps(hidden=[0], final=True)
    runs = [run_capture(tiny, iterate_batches(images, batch_size=bs), [StackActivations(6, taps)],
                        mask_ratio=0.75, seed=3)[0].arrays for bs in (1, 4, 6)]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0]["keep"], other["keep"])
        np.testing.assert_allclose(runs[0]["final"], other["final"], atol=1e-5)
    assert runs[0]["keep"].shape == (6, 4)  # int(16 * 0.25)
    again = keep_for_images(torch.arange(6), 16, 0.75, seed=4)
    assert not torch.equal(again, torch.from_numpy(runs[0]["keep"]))
    assert (np.diff(runs[0]["keep"], axis=1) > 0).all()  # ascending: spatial order


def test_reused_store_gives_the_same_numbers_as_fresh_tensors(tiny, images):
    taps = Taps(hidden=None, attn=None, heads=None)
    store = TapStore(reuse=True)
    with torch.inference_mode():
        fresh = tiny(images, taps=taps)
        first = tiny(images, taps=taps, store=store)
        kept = {k: v.clone() for k, v in first.attn.items()}
        second = tiny(images.flip(0), taps=taps, store=store)
    for layer in fresh.attn:
        torch.testing.assert_close(kept[layer], fresh.attn[layer], atol=1e-6, rtol=1e-5)
        assert first.attn[layer].data_ptr() == second.attn[layer].data_ptr()
    for layer in fresh.hidden:
        torch.testing.assert_close(second.hidden[layer], fresh.hidden[layer].flip(0),
                                   atol=1e-5, rtol=1e-5)


def test_store_is_ignored_when_gradients_are_needed(tiny, images):
    store = TapStore(reuse=True)
    cap = tiny(images, taps=Taps(hidden=[1], attn=[1]), store=store)
    cap.hidden[1].sum().backward()
    assert tiny.blocks[0].attn.qkv.weight.grad is not None


def test_bfloat16_capture_stays_close_and_returns_float32(tiny, images):
    taps = Taps(final=True)
    fp32 = run_capture(tiny, iterate_batches(images), [StackActivations(6, taps)])[0].arrays
    bf16 = run_capture(tiny, iterate_batches(images), [StackActivations(6, taps)],
                       dtype=torch.bfloat16)[0].arrays
    assert bf16["final"].dtype == np.float32
    a, b = fp32["final"][:, 1:].mean(1), bf16["final"][:, 1:].mean(1)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.99


def test_bad_arguments_are_named(tiny, images):
    with pytest.raises(MaelensError, match="analyses"):
        run_capture(tiny, iterate_batches(images), [])
    with pytest.raises(MaelensError, match="dtype"):
        run_capture(tiny, iterate_batches(images), [StackActivations(6, Taps())],
                    dtype=torch.int8)
    with pytest.raises(MaelensError, match="mask_ratio"):
        run_capture(tiny, iterate_batches(images), [StackActivations(6, Taps())],
                    mask_ratio=1.0)


def test_tapped_bfloat16_attention_is_normalised_in_float32(tiny, images):
    model = tiny.to(torch.bfloat16)
    pixels = images.to(torch.bfloat16)
    with torch.inference_mode():
        stored = model(pixels, taps=Taps(attn=[1]), store=TapStore(reuse=True)).attn[1]
        fresh = model(pixels, taps=Taps(attn=[1])).attn[1]  # torch's own softmax
    assert torch.equal(stored, fresh)  # bf16 exponentials summed in bf16 would differ
