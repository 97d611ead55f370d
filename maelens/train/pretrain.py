"""MAE pre-training: random masking, masked-patch MSE, AdamW with warm-up + cosine."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from maelens.errors import MaelensError
from maelens.model.config import ViTConfig, preset
from maelens.model.masking import keep_for_images
from maelens.model.vit import VisionTransformer
from maelens.train._checks import resolve_device
from maelens.train.args import PretrainArgs
from maelens.train.data import TrainData, load_eval_data, load_training_data
from maelens.train.evaluate import feature_accuracies
from maelens.train.loop import LoopSpec, StepReport, run_loop
from maelens.train.optim import build_adamw
from maelens.train.result import TrainResult, write_result

log = logging.getLogger(__name__)


def pretrain_config(args: PretrainArgs, data: TrainData) -> ViTConfig:
    """The MAE to train: `preset` + `overrides`, the loss target of `args`, the data's
    normalisation, no classifier head."""
    config = preset(args.preset, **args.overrides).replace(
        norm_pix_loss=args.norm_pix_loss, mean=data.mean, std=data.std, num_classes=0)
    if not config.has_decoder:
        raise MaelensError(
            f"preset {args.preset!r} has no MAE decoder (decoder_depth=0); choose an MAE preset "
            "such as 'mae_demo' or set overrides={'decoder_depth': 2}."
        )
    check_data_fits(config, data)
    return config


def check_data_fits(config: ViTConfig, data: TrainData) -> None:
    """Images must have the model's channels and size."""
    _, channels, height, width = data.images.shape
    if (channels, height, width) != (config.in_chans, config.image_size, config.image_size):
        raise MaelensError(
            f"training images are {channels}x{height}x{width} (C x H x W) but the model expects "
            f"{config.in_chans}x{config.image_size}x{config.image_size}; fix: load the data at "
            "image_size or change the model's image_size."
        )


def build_seeded(config: ViTConfig, seed: int) -> VisionTransformer:
    """`VisionTransformer(config)` initialised after `torch.manual_seed(seed)` on the CPU (same
    initial weights on every device); the caller's global random state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VisionTransformer(config)


def pretrain(args: PretrainArgs, *, data: TrainData | None = None,
             eval_data: TrainData | None = None,
             callback: Callable[[StepReport], None] | None = None) -> TrainResult:
    """Pre-train an MAE as `args` says; write the checkpoint to `args.out_dir`.

    data / eval_data: in-memory data sets instead of loading `args.data` / `args.eval_data`
    (eval_data serves the k-NN / linear-probe figures of `evaluate_features`; with in-memory
    `data` and no eval_data there is no evaluation). callback: called
    with a `StepReport` after every step (an exception stops the run; resume continues it).
    """
    device = resolve_device(args.device)
    size = preset(args.preset, **args.overrides).image_size
    from_args = data is None
    data = data if data is not None else load_training_data(args.data, "train", size)
    config = pretrain_config(args, data)
    model = build_seeded(config, args.seed).to(device)
    optimizer = build_adamw(model, args.lr, args.weight_decay, args.betas)

    grid = config.image_size // config.patch_size

    def step_loss(pixels: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                  index: torch.Tensor, epoch: int) -> torch.Tensor:
        keep = keep_for_images(index, grid * grid, args.mask_ratio, args.seed, ("train", epoch),
                               device=pixels.device)
        return model.forward_mae(pixels, keep=keep).loss

    spec = LoopSpec(kind="mae_pretrain", module=model, optimizer=optimizer, step_loss=step_loss,
                    data=data, args=args, config=config, device=device)
    outcome = run_loop(spec, callback)
    metrics: dict[str, float] = {}
    if args.evaluate_features and outcome.complete:
        if eval_data is None and from_args:
            eval_data = load_eval_data(args.data, args.eval_data, config)
        if eval_data is not None:
            metrics = feature_accuracies(model, data.images, data.labels, eval_data.images,
                                         eval_data.labels, device=device)
            log.info("frozen mean-patch features: %s", metrics)
    model.eval()
    extra = {"mask_ratio": args.mask_ratio, "norm_pix_loss": args.norm_pix_loss,
             "eval_data": eval_data.description if eval_data is not None else None}
    return write_result(spec, outcome, model, metrics, extra)
