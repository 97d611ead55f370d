"""Bad inputs and faults of the command line: every one is a single line on stderr with exit
status 2 (128 + signal for an interruption), no traceback, the name of the key / file / option,
and nothing left behind: no output file and no temporary file.

Grouped by the items of issue 7: markup, tracebacks, late failures, stale temporary files
(kill -9 and SIGTERM mid-write, in real subprocesses), silent or misleading results, extreme
aspect ratios, head counts, and smaller things; then typer's own usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from maelens.atomic import atomic_write, remove_stale, temp_name_pattern
from maelens.checkpoints.load import load_model
from maelens.checkpoints.native import read_native, save_checkpoint
from maelens.cli import app
from maelens.cli._common import note, print_error, say
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.model.vit import VisionTransformer
from tests.conftest import TINY_TRAIN_OVERRIDES, tiny_model

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# --------------------------------------------------------------------------- helpers
def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def one_line_error(result, *needles: str, folder: Path | None = None,
                   absent: tuple[Path, ...] = ()) -> str:
    """Exit 2, exactly one line on stderr starting `error:`, no traceback, every needle in it,
    and nothing left behind (`absent` paths missing, no temporary file under `folder`)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    for path in absent:
        assert not path.exists(), path
    if folder is not None:
        assert temp_files(folder) == []
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny maelens MAE checkpoint (no head), a classifier, and an image folder of two
    readable images and a broken one whose name holds brackets."""
    root = tmp_path_factory.mktemp("cli_errors")
    mae = save_checkpoint(tiny_model(), root / "mae.safetensors")
    clf = save_checkpoint(tiny_model(num_classes=3, pool="avg", fc_norm=True, final_norm=False),
                          root / "clf.safetensors")
    images = root / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / "a[1].png")
    Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(images / "b.png")
    (images / "bad[x].jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"root": root, "mae": mae, "clf": clf, "images": images}


def extract_args(files, out: Path, *extra: object) -> list[object]:
    return ["extract", "--model", files["mae"], "--images", files["images"], "--out", out,
            *extra]


def timm_file(path: Path, config: ViTConfig, args: argparse.Namespace | None = None,
              drop: tuple[str, ...] = (), replace: dict | None = None) -> Path:
    """A timm / official-MAE style file of a random `config` model (heads are not stored)."""
    torch.manual_seed(0)
    state = VisionTransformer(config).state_dict()
    state = {k: v for k, v in state.items() if k not in drop}
    state.update(replace or {})
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": state, "epoch": 3, **({"args": args} if args else {})}, path)
    return path


SMALL = ViTConfig(image_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=4, mlp_dim=32)


# =========================================================================== 1. markup
def test_printers_never_interpret_markup(capsys):
    text = "[bold]x[/bold] missing ['blocks.0.attn.qkv.weight'] in runs[1]/a[red].png :smile:"
    say(text)
    note(text)
    print_error(text)
    captured = capsys.readouterr()
    assert captured.out == text + "\n"
    assert captured.err == text + "\n" + "error: " + text + "\n"


def test_missing_key_names_survive_in_brackets(tmp_path):
    config = SMALL.replace(embed_dim=64, num_heads=1)
    path = timm_file(tmp_path / "cut.safetensors", config, drop=("blocks.0.norm1.weight",))
    line = one_line_error(run("info", path), "cut.safetensors", "[blocks.0.norm1.weight]")
    assert "missing key" in line


def test_directory_listing_survives_in_brackets(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "notes[draft].txt").write_text("x")
    one_line_error(run("info", tmp_path / "ckpt"), "found [notes[draft].txt]")


def test_file_names_with_brackets_in_errors_and_notices(files, tmp_path):
    out = tmp_path / "acts[1].npz"
    strict = run(*extract_args(files, out, "--strict"))
    one_line_error(strict, "bad[x].jpg", folder=tmp_path, absent=(out,))
    ok = run(*extract_args(files, out))
    assert ok.exit_code == 0, ok.output
    assert f"wrote {out}: 2 images" in ok.stdout  # `[1]` kept verbatim
    # item 8: each skipped image is reported once (the library only logs it at INFO)
    assert [line for line in ok.stderr.splitlines() if "bad[x].jpg" in line] == [
        line for line in ok.stderr.splitlines() if line.startswith("skipped ")]
    assert sum(line.startswith("skipped ") for line in ok.stderr.splitlines()) == 1


# =========================================================================== 2. tracebacks
@pytest.mark.parametrize("content, needle", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "holds a JSON list, not an object"),
    ('{"config": 3}', "has no `config` object"),
    ('{"config": {"embed_dim": 32, "colour": 1}}', "colour"),
])
def test_broken_maelens_json(files, tmp_path, content, needle):
    folder = tmp_path / "ckpt"
    save_checkpoint(tiny_model(), folder)
    (folder / "maelens.json").write_text(content)
    one_line_error(run("info", folder), "maelens.json", needle)


def test_broken_maelens_config_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"maelens_config": "{oops"})
    one_line_error(run("info", path), "bad.safetensors", "`maelens_config`", "not valid JSON")
    save_file({"x": torch.zeros(1)}, str(path), metadata={"maelens_config": '"a string"'})
    one_line_error(run("info", path), "`maelens_config`", "not an object")


@pytest.mark.parametrize("device, needle", [
    ("cuda", "CUDA is not available"), ("cuda:9", "cuda:9"), ("tpu", "'tpu'"),
    ("meta", "'meta'"), ("gpu", "'gpu'"),
])
def test_bad_devices_are_refused_before_loading(files, tmp_path, device, needle):
    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    out = tmp_path / "o.npz"
    # --model does not exist: the device must be refused before the model is looked at
    args = ["extract", "--model", tmp_path / "absent.pth", "--images", files["images"],
            "--out", out, "--device", device]
    one_line_error(run(*args), "--device", needle, folder=tmp_path, absent=(out,))


@pytest.mark.parametrize("layers", ["lastx", "last-1", "1,x", "last"])
def test_bad_layer_syntax(files, tmp_path, layers):
    out = tmp_path / "o.npz"
    one_line_error(run(*extract_args(files, out, "--layers", layers)), "--layers",
                   folder=tmp_path, absent=(out,))


@pytest.mark.parametrize("seed", [18_000_000_000_000, 2**64 + 5, -3])
def test_huge_and_negative_seeds_with_masking_work(files, tmp_path, seed):
    out = tmp_path / "o.npz"
    result = run(*extract_args(files, out, "--mask-ratio", "0.5", "--seed", str(seed)))
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        assert data["keep"].shape == (2, 8)


# =========================================================================== 3. late failures
def test_missing_out_folder_is_refused_before_the_model_loads(files, tmp_path):
    out = tmp_path / "nowhere" / "o.npz"
    args = ["extract", "--model", tmp_path / "absent.pth", "--images", files["images"],
            "--out", out]
    one_line_error(run(*args), "--out", "nowhere", "does not exist", absent=(out.parent,))


def test_out_that_is_a_folder(files, tmp_path):
    out = tmp_path / "dir.npz"
    out.mkdir()
    one_line_error(run(*extract_args(files, out)), "--out", "dir.npz", "is a folder",
                   folder=tmp_path)
    assert list(out.iterdir()) == []


def test_unwritable_out_folder_names_out_not_a_temporary_file(files, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: use a folder nobody can create files in
        if not Path("/proc").is_dir():
            pytest.skip("no read-only folder to write to")
        out = Path("/proc/acts.npz")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        out = tmp_path / "ro" / "acts.npz"
    line = one_line_error(run(*extract_args(files, out)), "`--out`", str(out), "cannot write",
                          absent=(out,))
    assert ".tmp" not in line


def test_bad_out_suffix_and_train_out_that_is_a_file(files, tmp_path):
    out = tmp_path / "o.txt"
    one_line_error(run(*extract_args(files, out)), "--out", ".npz", absent=(out,))
    (tmp_path / "taken").write_text("x")
    one_line_error(run("pretrain", "--out", tmp_path / "taken"), "--out", "taken", "is a file")


# =========================================================================== 4. stale temporaries
def test_atomic_write_removes_its_temporary_file_on_error_and_sigterm(tmp_path):
    target = tmp_path / "x[1].bin"

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)

    def terminated(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)  # handled like Ctrl-C during the write
        time.sleep(5)

    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:  # a plugin's handler: sending SIGTERM is not safe here
        pytest.skip("SIGTERM already has a handler in this process")
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, terminated)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is restored
    assert not target.exists() and temp_files(tmp_path) == []


def test_stale_temporaries_are_removed_but_live_ones_kept(tmp_path):
    import fcntl

    target = tmp_path / "acts.npz"
    stale = tmp_path / ".acts.npz.abcd1234.tmp"
    live = tmp_path / ".acts.npz.live5678.tmp"
    other = tmp_path / ".other.npz.abcd1234.tmp"  # another target's: not ours to remove
    for path in (stale, live, other):
        path.write_bytes(b"x" * 100)
    with open(live, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a writer that is still running
        assert temp_name_pattern(target).match(stale.name)
        assert remove_stale(target) == [stale]
        atomic_write(target, lambda tmp: tmp.write_bytes(b"done"))
        assert live.exists() and other.exists() and target.read_bytes() == b"done"
    assert remove_stale(target) == [live]


STALL = """
import os, sys, time
from pathlib import Path

target, nth, ready = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
real_replace, seen = os.replace, []


def stalled_replace(src, dst, *args, **kwargs):
    # Stall between writing the temporary file and renaming it: the process is killed here.
    if Path(dst).name == target:
        seen.append(dst)
        if len(seen) == nth:
            ready.write_text(str(src))
            time.sleep(120)
    return real_replace(src, dst, *args, **kwargs)


os.replace = stalled_replace
from maelens.cli import app

sys.argv = ["maelens", *sys.argv[4:]]
app()
"""


def start_stalled(folder: Path, target: str, nth: int, args: list[object]) -> subprocess.Popen:
    """Start `maelens ARGS` in a subprocess that stalls in the `nth` write of `target`
    (temporary file written, not yet renamed) and then writes `folder/ready`."""
    script = folder / "stall.py"
    script.write_text(STALL)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(script), target, str(nth), str(folder / "ready"),
           *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def interrupt(proc: subprocess.Popen, folder: Path, how: signal.Signals
              ) -> subprocess.CompletedProcess:
    """Wait until `proc` stalls mid-write, send `how`, return the finished process."""
    ready = folder / "ready"
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the write never started: {proc.communicate()}")
        time.sleep(0.05)
    assert Path(ready.read_text()).exists()  # the temporary file is there, mid-write
    proc.send_signal(how)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_interrupted_cleanly(done: subprocess.CompletedProcess, how: signal.Signals,
                               folder: Path) -> None:
    if how == signal.SIGKILL:
        assert done.returncode == -signal.SIGKILL
        assert len(temp_files(folder)) == 1  # what kill -9 leaves; the rerun must remove it
    else:
        assert done.returncode == 128 + signal.SIGTERM, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("interrupted by SIGTERM")
        assert "Traceback" not in done.stderr
        assert temp_files(folder) == []


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory) -> Path:
    """24 random 32x32 images in two class folders: 3 steps per epoch at batch 8."""
    root = tmp_path_factory.mktemp("train_data")
    rng = np.random.default_rng(1)
    for i in range(24):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"c{i % 2}" / f"{i}.png")
    return root


def pretrain_args(out: Path, data: Path, *extra: str) -> list[object]:
    arch = [a for k, v in TINY_TRAIN_OVERRIDES.items() for a in ("--arch", f"{k}={v}")]
    sets = ["checkpoint_every=2", "progress=false", "evaluate_features=false",
            "augment_shift=2"]
    return ["pretrain", "--out", out, "--data", data, "--epochs", "2", "--batch-size", "8",
            "--warmup-epochs", "1", "--seed", "3", "--device", "cpu", *arch,
            *[a for s in sets for a in ("--set", s)], *extra]


# (command, signal) -> (file whose write stalls, which write of it)
KILLS = {("extract", signal.SIGKILL): ("acts.npz", 1),
         ("extract", signal.SIGTERM): ("acts.npz", 1),
         ("pretrain", signal.SIGKILL): ("train_state.pt", 2),
         ("pretrain", signal.SIGTERM): ("model.safetensors", 1)}


@pytest.fixture(scope="module")
def interrupted(files, train_folder, tmp_path_factory) -> dict:
    """The four interrupted runs, started together (each subprocess spends most of its time
    importing torch, so running them side by side keeps this file fast)."""
    running = {}
    for (command, how), (target, nth) in KILLS.items():
        folder = tmp_path_factory.mktemp(f"{command}_{how.name}")
        out = folder / ("acts.npz" if command == "extract" else "run")
        args = (["extract", "--model", files["mae"], "--images", files["images"], "--out", out,
                 "--mask-ratio", "0.5"] if command == "extract"
                else pretrain_args(out, train_folder))
        running[command, how] = (start_stalled(folder, target, nth, args), folder, out)
    return {key: (interrupt(proc, folder, key[1]), out)
            for key, (proc, folder, out) in running.items()}


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_extract_killed_mid_write_then_rerun(files, interrupted, tmp_path, how):
    done, out = interrupted["extract", how]
    assert not out.exists()
    assert_interrupted_cleanly(done, how, out.parent)
    assert run(*extract_args(files, out, "--mask-ratio", "0.5")).exit_code == 0
    assert temp_files(out.parent) == []
    reference = tmp_path / "reference.npz"
    assert run(*extract_args(files, reference, "--mask-ratio", "0.5")).exit_code == 0
    with np.load(reference) as want, np.load(out) as got:
        for name in want.files:
            if name != "meta":
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.fixture(scope="module")
def pretrained(train_folder, tmp_path_factory) -> Path:
    """The uninterrupted run (its folder name holds brackets: the report prints it verbatim)."""
    reference = tmp_path_factory.mktemp("reference") / "ref[0]"
    done = run(*pretrain_args(reference, train_folder))
    assert done.exit_code == 0, done.output
    assert f"checkpoint: {reference}" in done.stdout
    return reference


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_pretrain_killed_mid_write_then_resumed(train_folder, interrupted, pretrained, how):
    done, out = interrupted["pretrain", how]
    assert_interrupted_cleanly(done, how, out)
    again = run(*pretrain_args(out, train_folder, "--resume"))
    assert again.exit_code == 0, again.output
    assert temp_files(out) == []
    want, got = read_native(pretrained)[1], read_native(out)[1]
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


# =========================================================================== 5. silent / misleading
def test_resume_without_a_resume_state(train_folder, tmp_path):
    out = tmp_path / "fresh"
    one_line_error(run(*pretrain_args(out, train_folder, "--resume")), "--resume",
                   "train_state.pt", absent=(out,))


def test_existing_run_without_resume_names_the_option(train_folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_state.pt").write_bytes(b"x")
    one_line_error(run(*pretrain_args(out, train_folder)), "--resume", "train_state.pt")


class _Hostile:
    def __reduce__(self):
        return (os.system, ("touch HACKED",))


@pytest.mark.parametrize("kind", ["corrupt", "hostile", "foreign"])
def test_unusable_resume_state(train_folder, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    state = out / "train_state.pt"
    if kind == "corrupt":
        state.write_bytes(b"PK\x03\x04 truncated zip")
    elif kind == "hostile":
        torch.save({"format": 1, "payload": _Hostile()}, state)
    else:
        torch.save([1, 2, 3], state)
    line = one_line_error(run(*pretrain_args(out, train_folder, "--resume")), "train_state.pt")
    assert "weights_only" not in line and "delete it" in line
    assert not (tmp_path / "HACKED").exists()
    if kind == "hostile":
        assert "os.system" in line or "posix.system" in line


@pytest.mark.parametrize("value", [np.zeros(3), [1.0, 2.0], "text"])
def test_non_tensor_weight_is_named(tmp_path, value):
    config = SMALL.replace(embed_dim=64, num_heads=1, num_classes=2)
    path = timm_file(tmp_path / "odd.pth", config, replace={"head.weight": value})
    one_line_error(run("info", path), "odd.pth", "`head.weight`", "not a tensor")


def test_text_file_named_npy(files, tmp_path):
    fake = tmp_path / "images.npy"
    fake.write_text("just some text\n")
    out = tmp_path / "o.npz"
    line = one_line_error(run("extract", "--model", files["mae"], "--images", fake, "--out", out),
                          "images.npy", "not a .npy file", folder=tmp_path, absent=(out,))
    assert "pickle" not in line


def test_npz_passed_as_npy(files, tmp_path):
    fake = tmp_path / "images.npy"
    with open(fake, "wb") as handle:
        np.savez(handle, x=np.zeros((2, 32, 32, 3), np.uint8))
    one_line_error(run("extract", "--model", files["mae"], "--images", fake, "--out",
                       tmp_path / "o.npz"), "images.npy", "zip archive")


def test_npy_whose_header_claims_28_gib(files, tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {
            "descr": "|u1", "fortran_order": False, "shape": (100_000, 300, 334, 3)})
        handle.write(b"\x00" * 1000)
    one_line_error(run("extract", "--model", files["mae"], "--images", path, "--out",
                       tmp_path / "o.npz"), "huge.npy", "28.0 GiB", "truncated")


def test_npy_of_python_objects_and_npy_hint(files, tmp_path):
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    one_line_error(run("extract", "--model", files["mae"], "--images", objects, "--out",
                       tmp_path / "o.npz"), "objects.npy", "Python objects")
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((2, 3, 32, 32), np.float32))
    one_line_error(run("extract", "--model", files["mae"], "--images", floats, "--out",
                       tmp_path / "o.npz"), "floats.npy", "`--no-preprocess`")


@pytest.mark.parametrize("extra, needles", [
    (["--layers", "last0", "--taps", "hidden"], ["nothing to export", "--layers last0"]),
    (["--taps", ""], ["--taps", "names none"]),
    (["--taps", ","], ["--taps", "names none"]),
    (["--taps", "logits"], ["--taps logits", "no classifier head"]),
    (["--taps", "hidden,colour"], ["--taps", "colour"]),
])
def test_exports_with_nothing_in_them_are_refused(files, tmp_path, extra, needles):
    out = tmp_path / "o.npz"
    one_line_error(run(*extract_args(files, out, *extra)), *needles, folder=tmp_path,
                   absent=(out,))


def test_logits_of_a_classifier_still_export(files, tmp_path):
    out = tmp_path / "o.npz"
    result = run("extract", "--model", files["clf"], "--images", files["images"], "--out", out,
                 "--taps", "logits")
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        assert data["logits"].shape == (2, 3)


@pytest.mark.parametrize("value", ["-3", "0", "nan", "inf"])
def test_theory_target_px_names_the_option(tmp_path, value):
    out = tmp_path / "p.json"
    line = one_line_error(run("theory", "predict", "--target-px", value, "--out", out),
                          "--target-px", absent=(out,))
    assert "could not be estimated" not in line


# =========================================================================== 6. aspect ratios
def test_extreme_aspect_ratios_are_cropped_before_resizing(files, tmp_path):
    folder = tmp_path / "strips"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name, shape in [("wide.png", (1, 8000, 3)), ("wider.png", (1, 20000, 3)),
                        ("tall.png", (20000, 1, 3))]:
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / name)
    out = tmp_path / "o.npz"
    started = time.perf_counter()
    result = run("extract", "--model", files["mae"], "--images", folder, "--out", out)
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 20  # was 17 s and 5.4 GB for 1x8000 alone
    with np.load(out) as data:
        assert data["final"].shape[0] == 3


def test_centre_region_resampling_matches_the_whole_strip():
    import maelens.data.preprocess as pp

    y, x = np.mgrid[0:10, 0:400]
    smooth = np.stack([127 + 120 * np.sin(x / 13.0), 127 + 120 * np.cos(y / 3.0),
                       127 + 100 * np.sin((x + y) / 29.0)], -1).astype(np.uint8)
    pre = pp.Preprocess(32)
    for image in (smooth, smooth.transpose(1, 0, 2).copy()):
        fast = pre.crop(image)  # aspect 40 > MAX_EXACT_ASPECT: the centre region only
        old, pp.MAX_EXACT_ASPECT = pp.MAX_EXACT_ASPECT, 10**9
        try:
            exact = pre.crop(image)
        finally:
            pp.MAX_EXACT_ASPECT = old
        # Same geometry and filter; Pillow's `box` path rounds its fixed-point coefficients
        # differently, so values may differ by a level or two of 255, never more on a
        # smooth image.
        assert fast.shape == exact.shape == (32, 32, 3)
        assert np.abs(fast.astype(int) - exact.astype(int)).max() <= 2


# =========================================================================== 7. head counts
def test_width_not_a_multiple_of_64_needs_stated_heads(tmp_path):
    path = timm_file(tmp_path / "w48.safetensors", SMALL)
    one_line_error(run("info", path), "w48.safetensors", "width 48", "--arch num_heads=N")
    result = run("info", path, "--arch", "num_heads=4")
    assert result.exit_code == 0, result.output
    assert any(line.split() == ["num_heads", "4"] for line in result.stdout.splitlines())
    out = tmp_path / "o.npz"
    images = tmp_path / "x.npy"
    np.save(images, np.zeros((2, 32, 32, 3), np.uint8))
    result = run("extract", "--model", path, "--images", images, "--out", out, "--arch",
                 "num_heads=4", "--taps", "attn")
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        assert data["attn"].shape[2] == 4  # (L, N, H, T, T)


def test_decoder_width_not_a_multiple_of_32_needs_stated_heads(tmp_path):
    config = SMALL.replace(embed_dim=64, num_heads=1, decoder_embed_dim=24, decoder_depth=1,
                           decoder_num_heads=2, decoder_mlp_dim=16)
    path = timm_file(tmp_path / "dec24.safetensors", config)
    one_line_error(run("info", path), "decoder width 24", "--arch decoder_num_heads=N")
    assert run("info", path, "--arch", "decoder_num_heads=3").exit_code == 0


def test_official_args_model_names_the_heads(tmp_path):
    config = SMALL.replace(embed_dim=768, num_heads=12, mlp_dim=32)
    named = timm_file(tmp_path / "mae.pth", config,
                      args=argparse.Namespace(model="mae_vit_base_patch16", mask_ratio=0.75))
    model = load_model(named)
    assert model.config.num_heads == 12 and model.load_info["mask_ratio"] == 0.75
    small = timm_file(tmp_path / "odd.pth", SMALL,
                      args=argparse.Namespace(model="mae_vit_large_patch16"))
    with pytest.raises(MaelensError, match="width 48"):  # name disagrees: not trusted
        load_model(small)
    assert load_model(small, num_heads=2).config.num_heads == 2


@pytest.mark.parametrize("pair, needles", [
    ("colour=3", ["--arch", "['colour']", "num_heads"]),
    ("num_heads=0", ["--arch num_heads", "positive integer"]),
    ("num_heads=2.5", ["--arch num_heads"]),
    ("norm_eps=-1", ["--arch norm_eps", "positive number"]),
    ("noequals", ["--arch", "FIELD=VALUE"]),
])
def test_bad_arch_pairs(files, tmp_path, pair, needles):
    out = tmp_path / "o.npz"
    one_line_error(run(*extract_args(files, out, "--arch", pair)), *needles, absent=(out,))


def test_arch_heads_contradicting_a_checkpoint_that_states_them(files):
    one_line_error(run("info", files["mae"], "--arch", "num_heads=2"), "--arch num_heads=2",
                   "num_heads=4", "mae.safetensors")


def test_arch_norm_eps_rebuilds_the_model(tmp_path):
    path = timm_file(tmp_path / "eps.safetensors", SMALL.replace(embed_dim=64, num_heads=1))
    result = run("info", path, "--arch", "norm_eps=1e-12")
    assert result.exit_code == 0, result.output
    assert any(line.split() == ["norm_eps", "1e-12"] for line in result.stdout.splitlines())


# =========================================================================== 8. smaller
def test_maelens_checkpoints_report_their_mask_ratio():
    assert load_model("demo:mae").load_info["mask_ratio"] == 0.75
    assert load_model("demo:vit").load_info["mask_ratio"] is None


def test_readme_names_the_layer_of_each_knn_table():
    text = (ROOT / "README.md").read_text()
    definitions = text[text.index("### How each number is defined"):text.index("| paper |")]
    assert "*before* the final norm" in definitions  # the layer of every per-layer number
    models = text[text.index("| `mae_demo_pretrained`"):text.index("| `mae_demo_finetuned`")]
    assert "after the final norm" in models and "before the final norm" in models


# =========================================================================== typer usage errors
@pytest.mark.parametrize("args, needles", [
    (["extract", "--images", "x"], ["--model", "extract --help"]),
    (["extract", "--model", "m", "--images", "x", "--out", "o.npz", "--batch-size", "0"],
     ["--batch-size"]),
    (["extract", "--model", "m", "--images", "x", "--out", "o.npz", "--seed", "x"],
     ["--seed"]),
    (["extrat"], ["extrat"]),
    (["theory", "predict", "--rank", "many"], ["--rank"]),
])
def test_usage_errors_are_one_line(args, needles):
    one_line_error(run(*args), *needles)


def test_json_meta_of_an_export_is_plain(files, tmp_path):
    out = tmp_path / "o[2].npz"
    assert run(*extract_args(files, out)).exit_code == 0
    with np.load(out) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["skipped"][0].endswith("bad[x].jpg")
