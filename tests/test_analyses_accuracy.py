"""Top-1 accuracy: known answers on hand-made logits, the tiny model through a pass plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maelens.analyses.accuracy import Accuracy
from maelens.analyses.bootstrap import bootstrap_mean_ci
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.taps import Taps
from tests.conftest import tiny_model
from tests.robustness_helpers import batch, capture, check_halves_and_round_trip, image_batches

LOGITS = torch.tensor([[0.0, 5.0, 1.0, 2.0],    # argmax 1; among classes (0, 2, 3): 3
                       [3.0, 0.0, 2.0, 1.0],    # 0; 0
                       [0.0, 1.0, 4.0, 9.0],    # 3; 3
                       [1.0, 1.0, 0.0, 0.0]])   # tie 0/1 -> 0 (first); 0


def test_top1_on_known_logits():
    acc = Accuracy(bootstrap=0).update(capture(logits=LOGITS), batch([0, 1, 2, 3], [1, 0, 2, 1]))
    out = acc.result()
    np.testing.assert_array_equal(out.arrays["predicted"], [1, 0, 3, 0])
    np.testing.assert_array_equal(out.arrays["correct"], [True, True, False, False])
    assert out.arrays["correct"].dtype == bool
    (row,) = out.rows
    assert (row.metric, row.value, row.unit, row.ci_low) == ("top1", 50.0, "%", None)
    assert row.extra == {"classes": "all", "images": 4, "correct": 2}


def test_restricted_classes_by_position_and_by_logit_index():
    # Evaluated classes (0, 2, 3): labels are positions in that list by default.
    acc = Accuracy(classes=[0, 2, 3], bootstrap=0)
    out = acc.update(capture(logits=LOGITS), batch([0, 1, 2, 3], [2, 0, 2, 0])).result()
    np.testing.assert_array_equal(out.arrays["predicted"], [3, 0, 3, 0])
    np.testing.assert_array_equal(out.arrays["correct"], [True, True, True, True])
    assert out.rows[0].extra["classes"] == [0, 2, 3] and out.meta["label_space"] == "position"
    logit = Accuracy(classes=[0, 2, 3], bootstrap=0, label_space="logit")
    out = logit.update(capture(logits=LOGITS), batch([0, 1, 2, 3], [3, 0, 2, 1])).result()
    np.testing.assert_array_equal(out.arrays["correct"], [True, True, False, False])


def test_ci_is_the_poisson_bootstrap_of_the_flags():
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(40, 3, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    out = Accuracy(bootstrap=300, seed=5).update(capture(logits=logits),
                                                 batch(torch.arange(40), labels)).result()
    flags = (logits.argmax(1) == labels).numpy()
    lo, hi = bootstrap_mean_ci(100.0 * flags, np.arange(40), seed=5, n_draws=300)
    row = out.rows[0]
    assert row.value == pytest.approx(100 * flags.mean())
    assert (row.ci_low, row.ci_high) == (lo, hi) and lo < row.value < hi


def test_tiny_model_through_a_pass_plan_matches_a_direct_forward(tmp_path):
    model = tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False)
    gen = torch.Generator().manual_seed(3)
    pixels, labels = torch.rand(10, 3, 32, 32, generator=gen), torch.randint(0, 4, (10,),
                                                                            generator=gen)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (model.config.mean,
                                                             model.config.std))
    with torch.inference_mode():
        direct = model((pixels - mean) / std, taps=Taps(final=False, logits=True)).logits

    def feed(acc: Accuracy, part: slice) -> None:
        plan = PassPlan(model)
        plan.add(acc)
        plan.feed(image_batches(pixels, labels, part))

    out = check_halves_and_round_trip(lambda: Accuracy(bootstrap=200), feed, 10, tmp_path)
    np.testing.assert_array_equal(out.arrays["predicted"], direct.argmax(1).numpy())
    np.testing.assert_array_equal(out.arrays["labels"], labels.numpy())


def test_model_without_head_or_labels_fails_with_one_line():
    with pytest.raises(MaelensError, match="classifier head") as info:
        Accuracy().update(capture(torch.zeros(2, 5, 8)), batch([0, 1], [0, 1]))
    assert "\n" not in str(info.value)
    with pytest.raises(MaelensError, match="labels"):
        Accuracy().update(capture(logits=LOGITS), batch([0, 1, 2, 3]))
    headless = PassPlan(tiny_model())  # an MAE without a head: the model refuses logits
    headless.add(Accuracy())
    with pytest.raises(MaelensError, match="classifier head"):
        headless.feed(image_batches(torch.rand(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64),
                                    slice(None)))


@pytest.mark.parametrize("kwargs, match", [
    ({"classes": []}, "`classes`"), ({"classes": [1, 1]}, "`classes`"),
    ({"classes": [-1]}, "`classes`"), ({"bootstrap": -1}, "`bootstrap`"),
    ({"label_space": "names"}, "`label_space`"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(MaelensError, match=match):
        Accuracy(**kwargs)


def test_bad_classes_or_labels_against_the_logits():
    with pytest.raises(MaelensError, match="`classes` contains 7"):
        Accuracy(classes=[0, 7]).update(capture(logits=LOGITS), batch([0, 1, 2, 3], [0] * 4))
    with pytest.raises(MaelensError, match="outside the 2 evaluated"):
        Accuracy(classes=[0, 1]).update(capture(logits=LOGITS), batch([0, 1, 2, 3], [0, 1, 2, 0]))
