"""`maelens subspaces` and `maelens attention` end to end on tiny checkpoints and an ImageNet-
layout folder, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from maelens.checkpoints.native import save_checkpoint
from maelens.cli import geometry
from maelens.results.store import read_results
from tests.conftest import tiny_model

runner = CliRunner()


def make_app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    geometry.register(app)
    return app


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("geometry")
    mae = save_checkpoint(tiny_model(), root / "mae.safetensors")  # 4 x 4 grid of 8 px
    fine = save_checkpoint(tiny_model(seed=1, patch_size=4), root / "fine.safetensors")  # 8 x 8
    rng = np.random.default_rng(0)
    images = root / "imgs"
    for name in ("ants", "bees", "cats"):
        (images / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(images / name / f"{i}.png")
    flat = root / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(flat / f"{i}.png")
    return {"mae": mae, "fine": fine, "images": images, "flat": flat, "root": root}


def run(*args):
    return runner.invoke(make_app(), [str(a) for a in args])


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_subspaces_writes_results_and_figures(files):
    out = files["root"] / "sub"
    result = run("subspaces", "--model", files["mae"], "--images", files["images"],
                 "--classes", 3, "--per-class", 4, "--k", 2, "--mask-ratio", 0.5,
                 "--out", out)
    assert result.exit_code == 0, result.output
    assert "median θ1 (deg)" in result.output
    results = read_results(out)
    medians = [r for r in results.rows if r["metric"] == "theta1_deg_median"
               and r["extra"]["kind"] == "patch"]
    assert [r["layer"] for r in medians] == [0, 1, 2]
    assert all(0 <= r["value"] <= 90 for r in medians)
    assert {r["condition"] for r in results.rows} == {"mask0.5"}
    for stem in ("fig4_theta1", "subspace_spectra"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    theta = results.array(str(files["mae"]), "subspaces", "mask0.5", "patch_theta1_rad")
    assert theta.shape == (3, 3)  # (L, pairs)


def test_attention_compares_two_models_with_different_grids(files):
    out = files["root"] / "att"
    result = run("attention", "--model", files["mae"], "--model", files["fine"],
                 "--images", files["images"], "--layers", "1,2", "--cls-policy", "raw",
                 "--out", out)
    assert result.exit_code == 0, result.output
    results = read_results(out)
    for name, heads in ((files["mae"], 4), (files["fine"], 4)):
        distance = results.array(str(name), "attention_distance", "clean", "distance_px")
        assert distance.shape == (2, heads)
        assert str(name) in result.output
    grids = {str(n): results.array(str(n), "attention_distance", "clean", "grid").tolist()
             for n in (files["mae"], files["fine"])}
    assert grids == {str(files["mae"]): [4, 4], str(files["fine"]): [8, 8]}
    assert (out / "fig3_attention_distance.png").stat().st_size > 1000


@pytest.mark.parametrize("args,needles", [
    (["attention", "--model", "A", "--model", "B", "--model", "C"], ["`--model`"]),
    (["attention", "--model", "M", "--cls-policy", "none"], ["`--cls-policy`", "exclude"]),
    (["attention", "--model", "M", "--mask-ratio", "1.0"], ["`--mask-ratio`"]),
    (["attention", "--model", "M", "--layers", "5"], ["`--layers`", "1..2"]),
    (["subspaces", "--model", "M", "--layers", "x"], ["`--layers`"]),
    (["subspaces", "--model", "M", "--k", "3"], ["`k`=3", "class 0", "'cls'"]),
    (["subspaces", "--model", "M", "--images", "FLAT"], ["at least two classes"]),
    (["subspaces", "--model", "M", "--images", "nowhere"], ["`--images`", "does not exist"]),
])
def test_bad_options_give_one_line_errors(files, args, needles):
    swap = {"M": files["mae"], "A": files["mae"], "B": files["fine"], "C": files["mae"],
            "FLAT": files["flat"]}
    args = [str(swap.get(a, a)) for a in args]
    if "--images" not in args:
        args += ["--images", str(files["images"]), "--per-class", "2"]
    one_line_error(run(*args, "--out", files["root"] / "bad"), *needles)


def test_figures_render_again_from_the_results_files_alone(files, tmp_path):
    from maelens.errors import MaelensError
    from maelens.report.fig_layerwise_geometry import render_layerwise_geometry
    from maelens.results.store import ResultSet

    out = files["root"] / "sub"
    if not (out / "results.json").exists():
        test_subspaces_writes_results_and_figures(files)
    paths = render_layerwise_geometry(read_results(out), tmp_path / "again")
    assert sorted(p.name for p in paths) == ["fig4_theta1.png", "fig4_theta1.svg",
                                            "subspace_spectra.png", "subspace_spectra.svg"]
    with pytest.raises(MaelensError, match="neither attention_distance nor subspaces"):
        render_layerwise_geometry(ResultSet(), tmp_path / "none")
