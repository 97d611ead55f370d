"""`maelens run`: one experiment file to results, figures and a self-contained report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from maelens.checkpoints.native import save_checkpoint
from maelens.cli import app
from maelens.results.store import read_results
from maelens.studies.templates import TEMPLATES
from tests.conftest import tiny_model

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ckpt")
    models = {"mae": tiny_model(0, patch_size=4, num_heads=2),
              "finetuned": tiny_model(1, patch_size=4, num_heads=2, num_classes=10, pool="avg",
                                      fc_norm=True, final_norm=False),
              "vit": tiny_model(2, patch_size=4, num_heads=2, num_classes=10, decoder_depth=0)}
    return {role: str(save_checkpoint(m, root / f"{role}.safetensors"))
            for role, m in models.items()}


def experiment(checkpoints: dict[str, str], out: Path, **changes) -> dict:
    exp = {
        "models": checkpoints,
        "data": {"images": "mnist:test", "second_images": "photos"},
        "layerwise": {"mask_ratio": 0.5,
                      "tsne": {"classes": 3, "per_class": 4, "perplexity": 2.0,
                               "iterations": 300, "patch_tokens": 40},
                      "subspaces": {"classes": 3, "per_class": 8, "k": 2},
                      "separability": {"classes": 3, "per_class": 8}},
        "robustness": {"classes": 3, "per_class": 4, "blur": [[3, 1.0], [5, 2.0]],
                       "occlusion": [0, 50], "corruptions": ["gaussian_noise", "contrast"],
                       "severities": [1, 3], "masks": 3, "bootstrap": 20},
        "run": {"batch_size": 5, "out": str(out)},
    }
    for key, value in changes.items():
        exp[key] = {**exp.get(key, {}), **value}
    return exp


def write(path: Path, exp: dict) -> Path:
    path.write_text(yaml.safe_dump(exp))
    return path


def run_cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_run_writes_every_section_and_a_self_contained_report(checkpoints, tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", write(tmp_path / "e.yaml", experiment(checkpoints, out)))
    assert result.exit_code == 0, result.output
    results = read_results(out)
    analyses = {r["analysis"] for r in results.rows}
    assert {"tsne", "subspaces", "attention_distance", "separability", "accuracy",
            "alignment", "mask_invariance", "head_features", "image_quality",
            "theory"} <= analyses | {k.split("/")[1] for k in results.arrays}
    top1 = results.select(analysis="accuracy", model="finetuned", condition="clean")[0]
    assert 0 <= top1["value"] <= 100 and top1["unit"] == "%"
    assert all(len(c["sha256"]) == 64 for c in results.meta["checkpoints"].values())
    html = (out / "report.html").read_text()
    pngs = sorted((out / "figures").rglob("*.png"))
    assert len(pngs) >= 10 and html.count("<img ") == len(pngs)
    assert "http://" not in html and "https://" not in html
    for section in ("tsne", "subspaces", "attention-distance", "blur", "occlusion",
                    "imagenet-c", "alignment", "mask-invariance", "head-features", "theory"):
        assert f"id='{section}'" in html, section


def test_rerun_reuses_finished_analyses_and_report_rerenders(checkpoints, tmp_path):
    out = tmp_path / "out"
    exp = write(tmp_path / "e.yaml", experiment(checkpoints, out))
    assert run_cli("run", exp).exit_code == 0
    first = read_results(out)
    again = run_cli("run", exp)
    assert again.exit_code == 0 and "reused" in again.output
    assert_same_results(first, read_results(out))
    (out / "report.html").unlink()
    assert run_cli("report", out).exit_code == 0 and (out / "report.html").is_file()


def assert_same_results(a, b) -> None:
    rows = lambda r: sorted(json.dumps(x, sort_keys=True) for x in r.rows)  # noqa: E731
    assert rows(a) == rows(b)
    assert a.arrays.keys() == b.arrays.keys()
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=key)


def test_a_killed_run_resumes_to_the_same_results(checkpoints, tmp_path):
    whole = tmp_path / "whole"
    assert run_cli("run", write(tmp_path / "a.yaml", experiment(checkpoints, whole))).exit_code \
        == 0
    out = tmp_path / "killed"
    exp = write(tmp_path / "b.yaml", experiment(checkpoints, out))
    env = {**os.environ, "MAELENS_CACHE_EVERY_S": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "maelens", "run", str(exp)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "cache").rglob("*.done.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    resumed = run_cli("run", exp, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_results(read_results(whole), read_results(out))


@pytest.mark.parametrize("text, match", [
    ("models: [\n", "not valid YAML"),
    ("models: {mae: x}\nlayerwise: {tnse: {}}\n", "layerwise.tnse"),
    ("models: {mae: x}\nrobustness: {masks: lots}\n", "robustness.masks"),
    ("- 1\n- 2\n", "mapping"),
])
def test_bad_experiment_files_name_the_field_and_line(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli("run", path)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in result.output


def test_missing_files_and_bad_output_folders_are_named(checkpoints, tmp_path):
    missing = experiment({"mae": str(tmp_path / "nope.pth")}, tmp_path / "o")
    result = run_cli("run", write(tmp_path / "m.yaml", missing))
    assert result.exit_code == 2 and "nope.pth" in result.output
    (tmp_path / "afile").write_text("x")
    as_file = experiment(checkpoints, tmp_path / "afile")
    result = run_cli("run", write(tmp_path / "f.yaml", as_file))
    assert result.exit_code == 2 and "afile" in result.output and "is a file" in result.output
    assert run_cli("run", tmp_path / "absent.yaml").exit_code == 2
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = run_cli("run", write(tmp_path / "l.yaml", experiment(checkpoints, locked)))
        assert result.exit_code == 2 and "not writable" in result.output


def test_the_paper_recipe_runs_with_tiny_stand_ins(checkpoints, tmp_path):
    """examples/paper-imagenet.yaml as shipped, with only models, images and device replaced,
    so the recipe cannot rot."""
    shipped = Path(__file__).parents[1] / "examples" / "paper-imagenet.yaml"
    assert shipped.read_text() == TEMPLATES["paper-imagenet"]
    exp = yaml.safe_load(shipped.read_text())
    for role in ("mae", "finetuned", "vit"):
        assert exp["models"][role]  # names resolved by `maelens models`
    exp["models"] = checkpoints
    exp["data"]["images"] = "mnist:test"
    exp["layerwise"]["tsne"].update(per_class=3, iterations=300, perplexity=2.0)
    exp["layerwise"]["subspaces"].update(classes=3, per_class=3, k=2)
    exp["robustness"].update(classes=2, per_class=2, masks=3, bootstrap=10)
    exp["run"].update(device="cpu", out=str(tmp_path / "paper"), batch_size=8)
    result = run_cli("run", write(tmp_path / "paper.yaml", exp))
    assert result.exit_code == 0, result.output
    table = (tmp_path / "paper" / "tables" / "finetuned" / "table2_imagenet_c.csv").read_text()
    header, *severities = table.strip().splitlines()[:6]
    assert len(header.split(",")) == 1 + 15  # every corruption ...
    assert [row.split(",")[0] for row in severities] == ["1", "2", "3", "4", "5"]  # x 5


def test_init_writes_templates_that_validate(tmp_path):
    for example in TEMPLATES:
        path = tmp_path / f"{example}.yaml"
        assert run_cli("init", path, "--example", example).exit_code == 0
        from maelens.studies.experiment import load_experiment

        load_experiment(path)
    assert run_cli("init", tmp_path / "demo.yaml").exit_code == 2  # exists: no overwrite
    assert run_cli("init", tmp_path / "x.yaml", "--example", "nope").exit_code == 2
