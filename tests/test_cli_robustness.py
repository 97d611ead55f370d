"""`maelens robustness` and `maelens corrupt` end to end on a tiny classifier, and every
bad-input path as one line (the commands are registered on a fresh Typer app here)."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from maelens.checkpoints.native import save_checkpoint
from maelens.cli.robustness import register
from maelens.results.store import read_results
from maelens.studies.imagenet_c import scan_imagenet_c
from tests.conftest import tiny_model

runner = CliRunner()
app = typer.Typer()
register(app)
app.command("noop", hidden=True)(lambda: None)  # two commands: names are required

FAST = ["--blur", "5:1,11:5", "--occlusion", "0,50", "--corruptions", "fog",
        "--severities", "1,2", "--masks", "2", "--top-k", "3", "--bootstrap", "20",
        "--batch-size", "3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False)
    checkpoint = save_checkpoint(model, root / "tiny.safetensors")
    encoder = save_checkpoint(tiny_model(), root / "encoder.safetensors")
    rng = np.random.default_rng(0)
    for k in range(4):
        (root / "val" / f"n0{k}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                root / "val" / f"n0{k}" / f"val_{i}.JPEG", quality=95)
    return {"root": root, "model": checkpoint, "encoder": encoder, "images": root / "val"}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    text = result.output.strip().splitlines()[-1]
    assert text.startswith("error:"), result.output
    for needle in needles:
        assert needle in text, text


def test_robustness_writes_results_tables_and_figures(files):
    out = files["root"] / "out"
    result = run("robustness", "--model", files["model"], "--images", files["images"],
                 "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "clean top-1" in result.output and "wrote" in result.output
    results = read_results(out)
    assert results.meta["settings"]["blur_levels"] == [[5, 1.0], [11, 5.0]]
    assert (out / "tables" / "table1_blur.md").is_file()
    assert (out / "tables" / "table2_imagenet_c.csv").is_file()
    assert (out / "figures" / "fig5_occlusion_accuracy.png").is_file()
    assert (out / "figures" / "fig_examples_corruptions.svg").is_file()


def test_corrupt_writes_an_imagenet_c_tree_the_study_reads(files):
    tree = files["root"] / "c"
    result = run("corrupt", "--images", files["images"], "--out", tree, "--size", "32",
                 "--corruptions", "fog,contrast", "--severities", "1,2")
    assert result.exit_code == 0, result.output
    found = scan_imagenet_c(tree)
    assert set(found.folders) == {(c, s) for c in ("fog", "contrast") for s in (1, 2)}
    assert sorted(p.relative_to(tree).as_posix() for p in (tree / "fog" / "1").rglob("*.png"))[
        :2] == ["fog/1/n00/val_0.png", "fog/1/n00/val_1.png"]
    out = files["root"] / "out_c"
    result = run("robustness", "--model", files["model"], "--images", files["images"],
                 "--out", out, "--imagenet-c", tree, "--corruptions", "fog,contrast",
                 "--severities", "1,2", "--blur", "none", "--occlusion", "none", "--masks", "0",
                 "--top-k", "3", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    names = {c["name"] for c in read_results(out).meta["conditions"]}
    assert names == {f"imagenet-c/{c}/{s}" for c in ("fog", "contrast") for s in (1, 2)}


@pytest.mark.parametrize(("args", "needles"), [
    (["--blur", "4:1"], ["`--blur`", "odd"]),
    (["--blur", "5"], ["`--blur`"]),
    (["--occlusion", "0,120"], ["`--occlusion`"]),
    (["--corruptions", "smog"], ["`--corruptions`", "smog"]),
    (["--severities", "6"], ["`--severities`"]),
    (["--masks", "1"], ["`--masks`"]),
    (["--mask-ratio", "1.5"], ["`--mask-ratio`"]),
    (["--curves", "diagonal"], ["`--curves`"]),
    (["--fill", "grey"], ["`--fill`"]),
    (["--threshold", "0"], ["`--threshold`"]),
    (["--dtype", "float64"], ["`--dtype`"]),
    (["--device", "tpu"], ["`--device`"]),
])
def test_bad_options_are_one_line_errors(files, args, needles):
    result = run("robustness", "--model", files["model"], "--images", files["images"],
                 "--out", files["root"] / "bad", *FAST, *args)
    one_line_error(result, *needles)


def test_bad_models_and_folders(files):
    base = ["--images", files["images"], "--out", files["root"] / "bad", *FAST]
    one_line_error(run("robustness", "--model", files["encoder"], *base), "no classifier head")
    one_line_error(run("robustness", "--model", files["model"], *base, "--imagenet-c",
                       files["root"] / "absent"), "`--imagenet-c`")
    one_line_error(run("robustness", "--model", files["model"], *base, "--imagenet-c",
                       files["images"]), "`--imagenet-c`", "no ImageNet-C corruption folder")
    one_line_error(run("corrupt", "--images", files["images"], "--out", files["root"] / "x",
                       "--corruptions", "none"), "`--corruptions`")
