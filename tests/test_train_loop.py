"""The shared training loop: resume, the MAE loss, the schedule, weight-decay groups,
augmentation, the checkpoint metadata. Tiny models (depth 2, width 32, 32x32 images)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from maelens.checkpoints.native import read_native
from maelens.errors import MaelensError
from maelens.model.config import preset
from maelens.model.vit import VisionTransformer
from maelens.train import (
    STATE_FILE,
    PretrainArgs,
    TrainData,
    WarmupCosine,
    param_groups,
    pretrain,
    random_shift,
)
from tests.conftest import TINY_TRAIN_OVERRIDES as TINY


def tiny_data(n: int = 24, seed: int = 0) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g)
    return TrainData(images, torch.arange(n) % 2, ("a", "b"))


def tiny_args(out: Path, **changes) -> PretrainArgs:
    """6 steps: 24 images, batch 8 -> 3 steps per epoch, 2 epochs; state every 2 steps.
    Drop path and translation are on so that every random stream is exercised."""
    base = {"out_dir": str(out), "overrides": {**TINY, "drop_path_rate": 0.2}, "epochs": 2,
            "batch_size": 8, "lr": 1e-3, "warmup_epochs": 1.0, "augment_shift": 2,
            "checkpoint_every": 2, "progress": False, "device": "cpu", "seed": 3}
    return PretrainArgs(**{**base, **changes})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_native(path)[1]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_resume_after_stop_gives_identical_weights(tmp_path):
    data = tiny_data()
    full = pretrain(tiny_args(tmp_path / "full"), data=data)
    assert full.steps == full.total_steps == 6 and full.complete
    part = pretrain(tiny_args(tmp_path / "split", stop_at_step=4), data=data)
    assert part.steps == 4 and not part.complete
    # stop after step 4 (mid-epoch 2), then resume to the end
    rest = pretrain(tiny_args(tmp_path / "split", resume=True), data=data)
    assert rest.steps == 6 and rest.complete
    assert_same_weights(tmp_path / "full", tmp_path / "split")
    assert rest.final_loss == full.final_loss
    assert rest.history == full.history


def test_resume_after_crash_gives_identical_weights(tmp_path):
    data = tiny_data()
    pretrain(tiny_args(tmp_path / "full"), data=data)

    def crash(report):
        if report.step == 5:  # state was last written after step 4 (every 2 steps)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_args(tmp_path / "crash"), data=data, callback=crash)
    saved = torch.load(tmp_path / "crash" / STATE_FILE, weights_only=True)
    assert saved["loop"]["step"] == 4
    pretrain(tiny_args(tmp_path / "crash", resume=True), data=data)
    assert_same_weights(tmp_path / "full", tmp_path / "crash")
    leftovers = [p.name for p in (tmp_path / "crash").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_resume_with_other_arguments_names_them(tmp_path):
    data = tiny_data()
    pretrain(tiny_args(tmp_path, stop_at_step=2), data=data)
    with pytest.raises(MaelensError, match=r"lr=0\.001, requested 0\.002"):
        pretrain(tiny_args(tmp_path, lr=2e-3, resume=True), data=data)
    with pytest.raises(MaelensError, match="embed_dim=32, requested 64"):
        overrides = {**TINY, "drop_path_rate": 0.2, "embed_dim": 64}
        pretrain(tiny_args(tmp_path, overrides=overrides, resume=True), data=data)
    with pytest.raises(MaelensError, match="resume=True"):
        pretrain(tiny_args(tmp_path), data=data)
    with pytest.raises(MaelensError, match="training data differ"):
        pretrain(tiny_args(tmp_path, resume=True), data=tiny_data(n=32))


def test_checkpoint_metadata(tmp_path):
    export = tmp_path / "assets" / "tiny_mae.safetensors"
    result = pretrain(tiny_args(tmp_path, save_dtype="float16", export_to=str(export)),
                      data=tiny_data())
    assert read_native(export)[2]["final_loss"] == pytest.approx(result.final_loss)
    with safe_open(str(export), "pt") as handle:  # stored in half precision
        assert handle.get_tensor("blocks.0.attn.qkv.weight").dtype == torch.float16
    config, state, meta = read_native(tmp_path)
    assert config.embed_dim == 32 and config.has_decoder and config.drop_path_rate == 0.2
    assert meta["kind"] == "mae_pretrain" and meta["seed"] == 3 and meta["complete"]
    assert meta["final_loss"] == pytest.approx(result.final_loss)
    assert meta["args"]["mask_ratio"] == 0.75 and meta["args"]["batch_size"] == 8
    assert {"torch", "maelens", "python"} <= set(meta["versions"])
    assert meta["wall_time_s"] > 0 and len(meta["history"]) == 2
    stored = json.loads((tmp_path / "maelens.json").read_text())
    assert stored["meta"]["kind"] == "mae_pretrain"
    model = VisionTransformer(config)
    model.load_state_dict(state)  # fp16 storage read back as fp32


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    data = tiny_data()
    a = pretrain(tiny_args(tmp_path / "a", epochs=1), data=data)
    b = pretrain(tiny_args(tmp_path / "b", epochs=1), data=data)
    c = pretrain(tiny_args(tmp_path / "c", epochs=1, seed=4), data=data)
    assert a.final_loss == b.final_loss != c.final_loss


# ------------------------------------------------------------------------------ MAE loss
def patchify_by_loops(pixels: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), patches row-major, each tile flattened (row, col, chan)."""
    B, C, H, W = pixels.shape
    out = []
    for b in range(B):
        patches = []
        for i in range(H // p):
            for j in range(W // p):
                tile = pixels[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (C, p, p)
                patches.append(torch.stack([tile[c, r, s] for r in range(p) for s in range(p)
                                            for c in range(C)]))
        out.append(torch.stack(patches))
    return torch.stack(out)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_loss_equals_masked_patch_mse(norm_pix):
    config = preset("mae_demo", **TINY, norm_pix_loss=norm_pix)
    torch.manual_seed(0)
    model = VisionTransformer(config).eval()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model.forward_mae(pixels, mask_ratio=0.75,
                                generator=torch.Generator().manual_seed(2))
    target = patchify_by_loops(pixels, 4).double()  # (3, 64, 48)
    if norm_pix:
        n = target.shape[-1]
        mean = target.sum(-1, keepdim=True) / n
        var = ((target - mean) ** 2).sum(-1, keepdim=True) / (n - 1)  # unbiased
        target = (target - mean) / torch.sqrt(var + 1e-6)
    removed = [(b, i) for b in range(3) for i in range(64) if i not in out.keep[b].tolist()]
    assert len(removed) == 3 * 48  # 75 % of 64 patches per image
    errors = [((out.pred[b, i].double() - target[b, i]) ** 2).mean() for b, i in removed]
    expected = sum(errors) / len(errors)
    assert out.mask.sum() == len(removed)
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)


# ------------------------------------------------------------------------------ schedule
def test_warmup_cosine_values():
    s = WarmupCosine(base_lr=1e-3, total_steps=110, warmup_steps=10, min_lr=1e-5)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(5e-4)
    assert s(10) == pytest.approx(1e-3)
    assert s(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half-way down the cosine
    assert s(35) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s(110) == pytest.approx(1e-5)
    values = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert WarmupCosine(1.0, 4)(0) == 1.0  # no warm-up starts at the peak


def test_schedule_rejects_bad_values():
    with pytest.raises(MaelensError, match="warmup_steps"):
        WarmupCosine(1.0, 10, warmup_steps=11)
    with pytest.raises(MaelensError, match="min_lr"):
        WarmupCosine(1.0, 10, min_lr=2.0)


# ------------------------------------------------------------------------------ optimizer
def test_weight_decay_groups():
    model = VisionTransformer(preset("mae_demo", **TINY, pos_embed="learned"))
    groups = param_groups(model, weight_decay=0.05)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["param_names"]}
    plain = {n for g in groups if g["weight_decay"] == 0 for n in g["param_names"]}
    for name in ("pos_embed", "cls_token", "mask_token", "blocks.0.attn.qkv.bias",
                 "blocks.1.norm1.weight", "norm.bias", "decoder_norm.weight",
                 "patch_embed.proj.bias"):
        assert name in plain, name
    for name in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight",
                 "patch_embed.proj.weight", "decoder_pred.weight"):
        assert name in decayed, name
    assert "decoder_pos_embed" not in decayed | plain  # frozen sin-cos table: not optimized
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decayed | plain == trainable and not decayed & plain


def test_layer_decay_scales():
    config = preset("mae_demo", **{**TINY, "decoder_depth": 0}, num_classes=3)
    groups = param_groups(VisionTransformer(config), 0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scale["head.weight"] == 1.0 and scale["norm.weight"] == 1.0
    assert scale["blocks.1.mlp.fc1.weight"] == 0.5
    assert scale["blocks.0.mlp.fc1.weight"] == 0.25
    assert scale["patch_embed.proj.weight"] == scale["cls_token"] == 0.125


# ------------------------------------------------------------------------------ augmentation
def test_random_shift_translates_with_edge_padding():
    pixels = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(0))
    shifted = random_shift(pixels, 2, g)
    for b in range(2):
        dy, dx = (offsets[b] - 2).tolist()  # offset k in the padded image = shift k - 2
        for r in range(6):
            for c in range(6):
                src = pixels[b, 0, min(max(r + dy, 0), 5), min(max(c + dx, 0), 5)]
                assert shifted[b, 0, r, c] == src
    assert torch.equal(random_shift(pixels, 0, g), pixels)
    again = random_shift(pixels, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again, shifted)
