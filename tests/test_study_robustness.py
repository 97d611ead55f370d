"""The robustness study end to end on a tiny classifier: numbers against direct computation,
reproducibility (bit-equal tables across runs and batch sizes), every table and figure, the
ImageNet-C summaries against hand-computed answers, on-disk ImageNet-C, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from maelens.errors import MaelensError
from maelens.perturb.blur import gaussian_blur
from maelens.perturb.corruptions import CORRUPTIONS, corrupt
from maelens.perturb.quality import psnr, ssim
from maelens.report.fig_robustness import write_robustness_figures
from maelens.report.tables_robustness import write_robustness_tables
from maelens.results.store import ResultSet, read_results
from maelens.studies.inputs import ImageSet, load_image_set
from maelens.studies.robustness import RobustnessSettings, logit_classes, run_robustness
from maelens.studies.robustness_summary import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERROR,
    blur_order,
    imagenet_c_summary,
)
from tests.conftest import tiny_model

SMALL = RobustnessSettings(blur_levels=((5, 1.0), (11, 5.0)), percents=(0, 50), masks=3,
                           corruptions=("gaussian_noise", "contrast"), severities=(1, 5),
                           top_k=3, bootstrap=50, batch_size=5)


@pytest.fixture
def model():
    return tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False)


@pytest.fixture
def images():
    n = 12
    pixels = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    return ImageSet(pixels, torch.arange(n) % 4, ["a", "b", "c", "d"],
                    [f"img{i}" for i in range(n)], "random test images")


def _logits(model, pixels):
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model.classify((pixels - mean) / std)


def _array(results, analysis, condition, name):
    return results.array("tiny", analysis, condition, name)


def test_blur_accuracy_psnr_ssim_equal_direct_computation(model, images):
    results = run_robustness(model, images, SMALL, model_name="tiny")
    clean_pred = _logits(model, images.pixels).argmax(-1)
    np.testing.assert_array_equal(_array(results, "accuracy", "clean", "predicted"),
                                  clean_pred.numpy())
    for k, s in SMALL.blur_levels:
        name = f"blur/k{k}-s{s:g}"
        blurred = gaussian_blur(images.pixels, k, s)
        predicted = _logits(model, blurred).argmax(-1)
        np.testing.assert_array_equal(_array(results, "accuracy", name, "correct"),
                                      (predicted == images.labels).numpy())
        # Same float64 formula on the same float32 images: equal to the last bit.
        np.testing.assert_array_equal(_array(results, "image_quality", name, "psnr_db"),
                                      psnr(images.pixels, blurred).numpy())
        np.testing.assert_array_equal(_array(results, "image_quality", name, "ssim"),
                                      ssim(images.pixels, blurred).numpy())
        top1 = results.select(analysis="accuracy", condition=name, metric="top1")[0]
        assert top1["value"] == pytest.approx(100 * (predicted == images.labels).float().mean())


def test_tables_bit_equal_across_runs_and_batch_sizes(model, images, tmp_path):
    texts = []
    for run, batch_size in enumerate((5, 12, 5)):
        settings = dataclasses.replace(SMALL, batch_size=batch_size)
        results = run_robustness(model, images, settings, model_name="tiny")
        paths = write_robustness_tables(results, tmp_path / str(run))
        texts.append({p.name: p.read_bytes() for p in paths})
    assert texts[0] == texts[1] == texts[2]


def test_end_to_end_every_table_and_figure_from_the_results_files(model, images, tmp_path):
    run_robustness(model, images, SMALL, tmp_path / "run", model_name="tiny")
    results = read_results(tmp_path / "run")  # tables and figures from the files alone
    tables = {p.name for p in write_robustness_tables(results, tmp_path / "tables")}
    stems = ["table1_blur", "table2_imagenet_c", "table3_blur", "table3_imagenet_c",
             "table3_occlusion_pixels-rollout-zero", "table3_occlusion_tokens-rollout",
             "table3_occlusion_pixels-random-zero", "table_mask_invariance"]
    assert tables == {f"{s}{x}" for s in stems for x in (".csv", ".md")} | {"tables.md"}
    figures = {p.name for p in write_robustness_figures(results, tmp_path / "figures")}
    assert figures == {f"{s}.{x}" for s in ("fig5_occlusion_accuracy", "fig6_head_features_blur",
                                            "fig7_head_features_occlusion", "fig8_delta_c",
                                            "fig_examples_corruptions",
                                            "fig_examples_blur_occlusion")
                       for x in ("png", "svg")}
    table3 = (tmp_path / "tables" / "table3_occlusion_pixels-rollout-zero.csv").read_text()
    assert table3.splitlines()[1].startswith("Mean sim. (all),1.000,")  # p = 0: clean pass
    assert _array(results, "examples", "", "corruption").shape == (2, 2, 32, 32, 3)


def _accuracy_results(accuracy: dict[str, float], clean: float) -> ResultSet:
    """A ResultSet holding only accuracy rows and the condition list (known answers)."""
    rows = [{"analysis": "accuracy", "model": "m", "condition": "clean", "metric": "top1",
             "value": clean}]
    conditions = []
    for name, value in accuracy.items():
        c, s = name.split("/")
        rows.append({"analysis": "accuracy", "model": "m", "condition": name, "metric": "top1",
                     "value": value})
        conditions.append({"name": name, "family": "corruption", "corruption": c,
                           "severity": int(s)})
    return ResultSet(rows=rows, meta={"conditions": conditions})


def test_imagenet_c_summary_matches_the_hand_computed_mce():
    rng = np.random.default_rng(0)
    acc = {f"{c}/{s}": float(rng.uniform(20, 90)) for c in CORRUPTIONS for s in range(1, 6)}
    result = imagenet_c_summary(_accuracy_results(acc, clean=80.0), "m", on_disk=True)
    rows = {(r.metric, r.level): r for r in result.rows}
    ces, rel = [], []
    for c in CORRUPTIONS:
        err = np.mean([1 - acc[f"{c}/{s}"] / 100 for s in range(1, 6)])
        ces.append(err / ALEXNET_ERROR[c])
        rel.append((err - 0.2) / (ALEXNET_ERROR[c] - ALEXNET_CLEAN_ERROR))
        assert rows[("ce", c)].value == pytest.approx(100 * ces[-1], rel=1e-12)
    assert rows[("mce", "all")].value == pytest.approx(100 * np.mean(ces), rel=1e-12)
    assert rows[("relative_mce", "all")].value == pytest.approx(100 * np.mean(rel), rel=1e-12)
    assert rows[("mce", "all")].extra["comparable"] is True
    # AlexNet itself scores mCE 100 % and relative mCE 100 % (the normalisation's fixed point).
    alex = {f"{c}/{s}": 100 * (1 - ALEXNET_ERROR[c]) for c in CORRUPTIONS for s in range(1, 6)}
    rows = {(r.metric, r.level): r for r in imagenet_c_summary(
        _accuracy_results(alex, 100 * (1 - ALEXNET_CLEAN_ERROR)), "m", True).rows}
    assert rows[("mce", "all")].value == pytest.approx(100.0)
    assert rows[("relative_mce", "all")].value == pytest.approx(100.0)


def test_imagenet_c_summary_of_a_subset_is_marked_not_comparable():
    acc = {f"fog/{s}": 50.0 for s in range(1, 6)} | {"snow/1": 70.0}
    rows = imagenet_c_summary(_accuracy_results(acc, 90.0), "m", on_disk=False).rows
    by = {(r.metric, r.level): r for r in rows}
    assert by[("top1_mean", "snow")].value == 70.0 and ("ce", "snow") not in by
    assert by[("mce", "all")].extra["comparable"] is False
    assert by[("mce", "all")].extra["corruptions"] == 1


def test_blur_order_names_levels_out_of_parameter_order():
    rows, conditions = [], []
    for level, value in (("I", 30.0), ("II", 25.0), ("III", 26.0), ("IV", 20.0)):
        name = f"blur/{level}"
        conditions.append({"name": name, "family": "blur", "level": level})
        rows.append({"analysis": "image_quality", "model": "m", "condition": name,
                     "metric": "psnr_db_mean", "value": value})
        rows.append({"analysis": "image_quality", "model": "m", "condition": name,
                     "metric": "ssim_mean", "value": value / 40})
    order = blur_order(ResultSet(rows=rows, meta={"conditions": conditions}), "m")
    assert order["psnr_order"] == ["I", "III", "II", "IV"]
    assert order["moved"] == ["II", "III"] and not order["agrees"]
    assert "II, III" in order["note"]


def test_classes_restricted_or_argmax_over_every_logit(model, images):
    subset = images.subset([i for i in range(12) if images.labels[i] < 2])
    logits = _logits(model, subset.pixels)
    mapping = torch.tensor([2, 0])
    base = dataclasses.replace(SMALL, blur_levels=(), percents=(), corruptions=(), masks=0,
                               classes=(2, 0))
    free = run_robustness(model, subset, base, model_name="tiny")
    np.testing.assert_array_equal(_array(free, "accuracy", "clean", "correct"),
                                  (logits.argmax(-1) == mapping[subset.labels]).numpy())
    only = run_robustness(model, subset, dataclasses.replace(base, restrict=True),
                          model_name="tiny")
    position = logits[:, [2, 0]].argmax(-1)
    np.testing.assert_array_equal(_array(only, "accuracy", "clean", "correct"),
                                  (position == subset.labels).numpy())


def _folder(root, n_classes: int = 4, per_class: int = 2):
    rng = np.random.default_rng(5)
    for k in range(n_classes):
        (root / f"n0{k}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                root / f"n0{k}" / f"val_{i}.JPEG", quality=95)
    return root


def test_logit_classes_of_folder_picks(tmp_path):
    root = _folder(tmp_path / "val")
    picked = load_image_set(root, 32, classes=2, seed=1)
    positions = logit_classes(picked, 4)
    assert [f"n0{p}" for p in positions] == picked.class_names and positions != (0, 1)
    assert logit_classes(load_image_set(root, 32), 4) is None
    with pytest.raises(MaelensError, match="cannot tell which"):
        logit_classes(load_image_set(root, 32), 10)


def test_imagenet_c_files_equal_the_synthetic_corruptions(model, tmp_path):
    clean = load_image_set(_folder(tmp_path / "val"), 32)
    tree = tmp_path / "imagenet-c"
    for name in ("fog", "contrast"):
        for s in (1, 2):
            out = corrupt(clean.pixels, name, s, torch.arange(len(clean)), seed=7)  # 8-bit
            for path, image in zip(clean.names, out, strict=True):
                target = tree / name / str(s) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                array = (image * 255).round().byte().permute(1, 2, 0).numpy()
                Image.fromarray(array).save(target.with_suffix(".png"))
    base = dataclasses.replace(SMALL, blur_levels=(), percents=(), masks=0, seed=7,
                               corruptions=("fog", "contrast"), severities=(1, 2))
    synthetic = run_robustness(model, clean, base, model_name="tiny")
    on_disk = run_robustness(model, clean, dataclasses.replace(base, imagenet_c=str(tree)),
                             model_name="tiny")
    for name in ("fog/1", "contrast/2"):
        for analysis, array in (("accuracy", "correct"), ("image_quality", "psnr_db"),
                                ("alignment", "cosine")):
            np.testing.assert_array_equal(_array(synthetic, analysis, f"corrupt/{name}", array),
                                          _array(on_disk, analysis, f"imagenet-c/{name}", array))
    summary = on_disk.select(analysis="imagenet_c", level="fog", metric="top1_mean")[0]
    assert summary["extra"]["severities"] == [1, 2]


@pytest.mark.parametrize(("change", "needle"), [
    ({"masks": 1}, "`masks`"), ({"mask_ratio": 0.0}, "`mask_ratio`"),
    ({"percents": (0, 150)}, "`percents`"), ({"severities": (0,)}, "`severities`"),
    ({"corruptions": ("smog",)}, "smog"), ({"blur_levels": ((4, 1.0),)}, "`blur_levels`"),
    ({"curves": ("diagonal",)}, "`curves`"), ({"fill": "grey"}, "`fill`"),
    ({"top_k": 0}, "`top_k`"), ({"threshold": 1.5}, "`threshold`"),
    ({"bootstrap": -1}, "`bootstrap`"), ({"dtype": "float64"}, "`dtype`"),
])
def test_bad_settings_are_one_line_errors(change, needle):
    with pytest.raises(MaelensError) as info:
        dataclasses.replace(SMALL, **change)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_model_without_classifier_is_refused(images):
    encoder = tiny_model()
    with pytest.raises(MaelensError, match="no classifier head"):
        run_robustness(encoder, images, SMALL, model_name="encoder")


@pytest.mark.slow
def test_demo_finetuned_mae_on_digits():
    from maelens.checkpoints.load import load_model

    model = load_model("demo:finetuned")
    digits = load_image_set("mnist:test", 32).per_class(10, 5)
    settings = RobustnessSettings(percents=(0, 90), curves=("pixels",), corruptions=(),
                                  masks=0, bootstrap=0)
    results = run_robustness(model, digits, settings, model_name="demo")
    top1 = {r["condition"]: r["value"] for r in results.select(analysis="accuracy")}
    assert top1["clean"] >= 90.0  # the demo fine-tune scores ~98 % on the test digits
    assert top1["occlusion/pixels-rollout-zero/p90"] < top1["clean"]
    quality = {r["condition"]: r["value"] for r in results.select(metric="psnr_db_mean")}
    assert quality["blur/k5-s1"] == max(quality.values())  # the mildest level of Table I
    assert len(results.meta["blur_order"]["psnr_order"]) == 10
