"""The (m, p) sweep on a micro grid: every field written, finished points skipped on re-run,
mismatched settings and bad input refused with the parameter named."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from maelens.errors import MaelensError
from maelens.results.io import write_json
from maelens.studies.mnist_study import (
    StudySettings,
    predict_mnist,
    reference_spread,
    render_study,
)
from maelens.studies.theory_sweep import (
    POINT_FILE,
    SWEEP_FILE,
    SweepPoint,
    SweepSettings,
    point_dir,
    read_sweep,
    run_sweep,
)
from maelens.train import TrainData

MICRO = {"image_size": 16, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32,
         "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2,
         "decoder_mlp_dim": 32}


def micro_data(n: int, seed: int) -> TrainData:
    images = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return TrainData(images, torch.arange(n) % 2, ("a", "b"))


def micro_settings(out, **changes) -> SweepSettings:  # noqa: ANN001, ANN003
    """2 ratios x 1 patch size; 16 images in batches of 8 for 1 epoch: 2 steps per point."""
    base = {"out_dir": str(out), "mask_ratios": (0.25, 0.5), "patch_sizes": (4,),
            "overrides": MICRO, "epochs": 1, "batch_size": 8, "warmup_epochs": 0.0,
            "jacobian_images": 2}
    return SweepSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """One micro sweep shared by the tests: (folder, result, train data, held-out data)."""
    folder = tmp_path_factory.mktemp("sweep")
    data, held_out = micro_data(16, 0), micro_data(8, 1)
    seen = []
    result = run_sweep(micro_settings(folder), data=data, eval_data=held_out,
                       on_point=lambda point, reused: seen.append(reused))
    assert seen == [False, False]
    return folder, result, data, held_out


def test_micro_sweep_writes_every_field_and_skips_finished_points(micro):
    tmp_path, result, data, held_out = micro
    record = json.loads((tmp_path / SWEEP_FILE).read_text())
    assert record["schema_version"] == 1 and record["settings"]["patch_sizes"] == [4]
    fields = set(SweepPoint.__dataclass_fields__)
    assert [(p["mask_ratio"], p["patch_size"]) for p in record["points"]] == [(0.25, 4), (0.5, 4)]
    for point in record["points"]:
        assert set(point) == fields
        assert point["steps"] == 2
        for name in ("final_loss", "knn_accuracy", "linear_probe_accuracy", "mean_distance_px",
                     "out_of_patch_mass", "effective_rank", "wall_s", "train_s", "jacobian_s"):
            assert math.isfinite(point[name]), name
        assert 0 <= point["knn_accuracy"] <= 1 and 0 < point["out_of_patch_mass"] <= 1
    assert read_sweep(tmp_path).to_dict() == result.to_dict()
    assert result.table("mean_distance_px")[4].keys() == {0.25, 0.5}

    stamp = (point_dir(tmp_path, 0.5, 4) / "model" / "model.safetensors").stat().st_mtime_ns
    again = []
    rerun = run_sweep(micro_settings(tmp_path), data=data, eval_data=held_out,
                      on_point=lambda point, reused: again.append(reused))
    assert again == [True, True]
    assert rerun.to_dict() == result.to_dict()
    assert (point_dir(tmp_path, 0.5, 4) / "model" / "model.safetensors").stat().st_mtime_ns \
        == stamp

    with pytest.raises(MaelensError, match="other settings"):
        run_sweep(micro_settings(tmp_path, lr=1e-4), data=data, eval_data=held_out)
    assert (point_dir(tmp_path, 0.25, 4) / POINT_FILE).exists()


@pytest.mark.parametrize(("changes", "name"), [
    ({"mask_ratios": (0.5, 1.0)}, "mask_ratios"),
    ({"mask_ratios": (-0.1,)}, "mask_ratios"),
    ({"patch_sizes": (3,)}, "patch_sizes"),
    ({"patch_sizes": (0,)}, "patch_sizes"),
    ({"epochs": 0}, "epochs"),
    ({"overrides": {"widht": 3}}, "overrides"),
    ({"preset": "nope"}, "preset"),
])
def test_bad_settings_name_the_parameter(tmp_path, changes, name):
    with pytest.raises(MaelensError, match=name):
        micro_settings(tmp_path, **changes)


def test_study_renders_figures_and_summary_from_json_only(micro, tmp_path):
    folder, result, _, _ = micro
    images = np.random.default_rng(0).integers(0, 256, (40, 16, 16), dtype=np.uint8)
    settings = StudySettings(mask_ratios=(0.0, 0.5), patch_sizes=(2, 4), rank=4,
                             detail_ratios=(0.5,))
    prediction = predict_mnist(settings, images)
    assert prediction["recommendation"]["mask_ratio"] == 0.5  # m = 0 is not an MAE
    assert prediction["grid"]["mean_distance_px"][0][0] == pytest.approx(0.0, abs=1e-9)
    write_json(tmp_path / "prediction.json", {**prediction, "command": "maelens theory x"})
    write_json(tmp_path / "sweep.json", json.loads((folder / SWEEP_FILE).read_text()))
    checkpoint = result.points[1].checkpoint
    reference = reference_spread(checkpoint, images=1, test_images=micro[3].images)
    assert reference["mask_ratio"] == 0.5 and reference["steps"] == 2  # read from the checkpoint
    write_json(tmp_path / "reference.json", reference)
    summary = render_study(tmp_path).read_text()
    assert "maelens theory x" in summary and "| 0.5 | 4 |" in summary
    assert checkpoint in summary
    for name in ("predicted_mean_distance_px.png", "sweep_spread.png", "sweep_accuracy.png",
                 "sweep_profiles.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in summary


def test_cli_reports_bad_input_in_one_line_and_exits_2(tmp_path):
    from typer.testing import CliRunner

    from maelens.cli.theory import theory_app

    run = CliRunner().invoke(theory_app, ["sweep", "--out", str(tmp_path), "--patches", "3"])
    assert run.exit_code == 2
    assert "patch_sizes" in run.output and "Traceback" not in run.output
    run = CliRunner().invoke(theory_app, ["sweep", "--out", str(tmp_path), "--ratios", "0.5,1"])
    assert run.exit_code == 2 and "mask_ratios" in run.output
    run = CliRunner().invoke(theory_app, ["predict", "--patches", "4,x"])
    assert run.exit_code == 2 and "--patches" in run.output
