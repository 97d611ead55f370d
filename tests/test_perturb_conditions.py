"""Condition builders of the robustness study: names, levels, the pixels they produce (against
the perturbation functions called directly), parsing of command-line lists and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maelens.analyses.base import Batch
from maelens.engine.condition_sets import (
    PAPER_PERCENTS,
    blur_conditions,
    check_masks,
    condition_params,
    corruption_conditions,
    occlusion_conditions,
    parse_blur_levels,
    parse_corruptions,
    parse_percents,
    parse_severities,
    roman,
    stored_conditions,
)
from maelens.engine.conditions import DropTokens, OccludePixels
from maelens.errors import MaelensError
from maelens.perturb.blur import PAPER_BLUR_LEVELS, gaussian_blur
from maelens.perturb.corruptions import CORRUPTIONS, corrupt


def _batch(n: int = 3, size: int = 32) -> Batch:
    pixels = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    return Batch(pixels, torch.arange(10, 10 + n), torch.zeros(n, dtype=torch.int64))


def test_roman_numerals_of_the_paper_levels():
    assert [roman(i) for i in range(1, 11)] == ["I", "II", "III", "IV", "V", "VI", "VII",
                                                 "VIII", "IX", "X"]
    assert roman(14) == "XIV" and roman(40) == "XL"


def test_blur_conditions_follow_table_one_and_blur_like_gaussian_blur():
    conds = blur_conditions()
    assert [c.name for c in conds][:3] == ["blur/k5-s1", "blur/k5-s2", "blur/k5-s4"]
    assert conds[6].name == "blur/k7-s13.5" and conds[-1].name == "blur/k11-s5"
    assert [c.level for c in conds] == [roman(i) for i in range(1, 11)]
    assert {c.group for c in conds} == {"blur"}
    batch = _batch()
    for cond, (k, s) in zip(conds, PAPER_BLUR_LEVELS, strict=True):
        assert torch.equal(cond.pixels(batch, None), gaussian_blur(batch.pixels, k, s))
        params = condition_params(cond)
        assert (params["family"], params["kernel_size"], params["sigma"]) == ("blur", k, s)


def test_corruption_conditions_are_corrupt_keyed_by_image_index():
    conds = corruption_conditions(seed=3)
    assert len(conds) == 15 * 5 and conds[0].name == "corrupt/gaussian_noise/1"
    assert conds[-1].level == "jpeg_compression/5"
    batch = _batch()
    cond = corruption_conditions(["shot_noise"], [4], seed=3)[0]
    assert torch.equal(cond.pixels(batch, None),
                       corrupt(batch.pixels, "shot_noise", 4, batch.index, seed=3))
    assert condition_params(cond)["corruption"] == "shot_noise"
    assert condition_params(cond)["severity"] == 4
    # The same image in another batch position gets the same corruption.
    single = Batch(batch.pixels[2:], batch.index[2:])
    assert torch.equal(cond.pixels(single, None)[0], cond.pixels(batch, None)[2])


def test_occlusion_conditions_skip_the_clean_level_and_pick_the_op():
    pixels = occlusion_conditions(PAPER_PERCENTS, "pixels", "zero", "rollout", patch_size=8)
    assert len(pixels) == 9 and pixels[0].name == "occlusion/pixels-rollout-zero/p10"
    assert pixels[-1].level == "90%" and isinstance(pixels[0].pixels, OccludePixels)
    tokens = occlusion_conditions((0, 25.5), "tokens", ranking="random", seed=2)
    assert [c.name for c in tokens] == ["occlusion/tokens-random/p25.5"]
    assert isinstance(tokens[0].keep, DropTokens) and tokens[0].pixels is None
    params = condition_params(tokens[0])
    assert (params["mode"], params["ranking"], params["percent"]) == ("tokens", "random", 25.5)
    # Random control, pixel fill: exactly the seeded random patches are zeroed.
    cond = occlusion_conditions((50,), "pixels", "zero", "random", seed=1, patch_size=8)[0]
    batch = _batch()
    out = cond.pixels(batch, None)
    hidden = (out == 0).all(dim=1).float().view(3, 4, 8, 4, 8).mean(dim=(2, 4))  # per patch
    assert torch.equal(hidden.sum(dim=(1, 2)), torch.full((3,), 8.0))


def test_stored_conditions_read_the_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    cond, = stored_conditions({("fog", 2): paths})
    assert cond.name == "imagenet-c/fog/2"
    assert condition_params(cond)["severity"] == 2
    batch = Batch(torch.zeros(2, 3, 32, 32), torch.tensor([2, 0]))
    got = cond.pixels(batch, None)
    want = np.asarray(Image.open(paths[2]), dtype=np.float32) / 255
    np.testing.assert_array_equal(got[0].permute(1, 2, 0).numpy(), want)
    assert cond == stored_conditions({("fog", 2): list(reversed(paths))})[0]  # keyed by name


def test_parsers_accept_the_documented_forms():
    assert parse_blur_levels("paper") == PAPER_BLUR_LEVELS
    assert parse_blur_levels("5:1, 7:2.5") == ((5, 1.0), (7, 2.5))
    assert parse_blur_levels("none") == ()
    assert parse_percents("0,10,50") == (0.0, 10.0, 50.0)
    assert parse_percents("paper") == PAPER_PERCENTS
    assert parse_corruptions("all") == CORRUPTIONS
    assert parse_corruptions("fog,snow") == ("fog", "snow")
    assert parse_corruptions("none") == ()
    assert parse_severities("all") == (1, 2, 3, 4, 5)
    assert parse_severities("1,3") == (1, 3)
    assert check_masks(0) == 0 and check_masks(2) == 2


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: parse_blur_levels("4:1"), "`--blur`"),
    (lambda: parse_blur_levels("0:1"), "`--blur`"),
    (lambda: parse_blur_levels("-3:1"), "`--blur`"),
    (lambda: parse_blur_levels("5:0"), "`--blur`"),
    (lambda: parse_blur_levels("5"), "`--blur`"),
    (lambda: parse_blur_levels("5:1,5:1"), "repeats"),
    (lambda: parse_percents("10,120"), "`--occlusion`"),
    (lambda: parse_percents("-5"), "`--occlusion`"),
    (lambda: parse_percents("ten"), "`--occlusion`"),
    (lambda: parse_corruptions("fog,smoke"), "`--corruptions`"),
    (lambda: parse_severities("0"), "`--severities`"),
    (lambda: parse_severities("6"), "`--severities`"),
    (lambda: parse_severities(""), "`--severities`"),
    (lambda: check_masks(1), "`masks`"),
    (lambda: check_masks(-2), "`masks`"),
    (lambda: blur_conditions([(6, 1.0)]), "`levels`"),
    (lambda: corruption_conditions(["fog"], [0]), "`severities`"),
    (lambda: corruption_conditions(["smog"], [1]), "smog"),
    (lambda: occlusion_conditions((101,)), "`percents`"),
    (lambda: occlusion_conditions((10,), mode="patches"), "`mode`"),
    (lambda: occlusion_conditions((10,), fill="mean"), "`mean`"),
])
def test_bad_input_is_one_line_naming_the_option(call, needle):
    with pytest.raises(MaelensError) as info:
        call()
    assert needle in str(info.value) and "\n" not in str(info.value)
