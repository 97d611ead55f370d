"""`maelens tsne` and `maelens separability` end to end on tiny models and MNIST digits,
and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from maelens.checkpoints.native import save_checkpoint
from maelens.cli.embeddings import register
from maelens.results.store import read_results
from tests.conftest import tiny_model

runner = CliRunner()
app = typer.Typer()
register(app)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [save_checkpoint(tiny_model(seed), root / f"tiny{seed}.safetensors")
            for seed in (0, 1)]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_tsne_writes_results_and_figures(checkpoints, tmp_path):
    out = tmp_path / "tsne"
    result = run("tsne", "--model", checkpoints[0], "--images", "mnist:test", "--classes", 3,
                 "--per-class", 6, "--iterations", 30, "--patch-tokens", 30, "--per-image", 4,
                 "--layers", "1,2", "--out", out)
    assert result.exit_code == 0, result.output
    assert "s per layer" in result.output
    results = read_results(out)
    model, condition = str(checkpoints[0]), "mask0.75"
    assert results.array(model, "tsne", condition, "cls").shape == (2, 18, 2)
    assert results.array(model, "tsne", condition, "patch").shape == (2, 30, 2)
    assert results.array(model, "tsne", condition, "layers").tolist() == [1, 2]
    assert results.meta["class_names"][:3] == ["0", "1", "2"]
    for stem in ("fig1a_tsne_cls", "fig1b_tsne_mean_patch", "fig2_tsne_patch_tokens"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.svg").exists()


def test_separability_of_two_models_with_a_seeded_split(checkpoints, tmp_path):
    out = tmp_path / "sep"
    result = run("separability", "--model", checkpoints[0], "--model", checkpoints[1],
                 "--images", "mnist:test", "--classes", 3, "--per-class", 8, "--k", 3,
                 "--per-image", 2, "--out", out)
    assert result.exit_code == 0, result.output
    assert "separability per layer" in result.output and "same layer" in result.output
    results = read_results(out)
    rows = results.select(analysis="separability", model=str(checkpoints[0]))
    assert len(rows) == 3 * 3 * 4  # layers x kinds x metrics
    assert {r["extra"]["kind"] for r in rows} == {"cls", "mean_patch", "patch"}
    assert all(r["extra"]["n_test"] == 6 for r in rows if r["extra"]["kind"] != "patch")
    pair = f"{checkpoints[0]} vs {checkpoints[1]}"
    for analysis in ("cka_between", "cka_between_debiased"):
        assert results.array(pair, analysis, "clean", "cka").shape == (3, 3)
    within = results.array(str(checkpoints[0]), "cka_debiased", "clean", "cka")
    np.testing.assert_allclose(np.diag(within)[1:], 1.0)  # layer 0 mean patch varies too
    for stem in ("separability", "cka"):
        assert (out / f"{stem}.png").exists() and (out / f"{stem}.svg").exists()


def test_separability_with_given_train_images(checkpoints, tmp_path):
    out = tmp_path / "sep_train"
    result = run("separability", "--model", checkpoints[0], "--images", "mnist:test",
                 "--train-images", "mnist:train", "--classes", 2, "--per-class", 5, "--k", 3,
                 "--layers", "last1", "--per-image", 2, "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_results(out).select(analysis="separability", metric="knn_accuracy")
    assert [(r["layer"], r["extra"]["n_train"], r["extra"]["n_test"]) for r in rows] == [
        (2, 10, 10), (2, 10, 10), (2, 20, 20)]


@pytest.mark.parametrize(("args", "needles"), [
    (("--layers", "9"), ("`--layers`", "9", "0..2")),
    (("--per-class", 1), ("single image",)),
    (("--classes", 1), ("at least two classes",)),
    (("--mask-ratio", 1.0), ("`--mask-ratio`",)),
    (("--test-fraction", 1.5), ("`--test-fraction`",)),
    (("--images", "nowhere"), ("`--images`", "does not exist")),
])
def test_separability_errors_are_one_line(checkpoints, tmp_path, args, needles):
    base = {"--images": "mnist:test", "--classes": 2, "--per-class": 4}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [item for pair in base.items() for item in pair]
    one_line_error(run("separability", "--model", checkpoints[0], *flat, "--out",
                       tmp_path / "x"), *needles)


def test_three_models_and_a_bad_tsne_layer_are_refused(checkpoints, tmp_path):
    models = [item for path in (*checkpoints, checkpoints[0]) for item in ("--model", path)]
    one_line_error(run("separability", *models, "--out", tmp_path / "x"), "two to compare")
    one_line_error(run("tsne", "--model", checkpoints[0], "--layers", "-5", "--out",
                       tmp_path / "y"), "`--layers`")
