"""Classification: fine-tuning or linear probing a pre-trained encoder, and the supervised
ViT baseline trained from scratch. Both share the loop, the head and the evaluation.

Heads follow the MAE fine-tuning code: with pool="avg" the encoder's final `norm` is dropped
and a fresh `fc_norm` (weight 1, bias 0) normalises the mean patch token; with pool="cls" the
CLS token after `norm` is classified. The head is trunc-normal with std `head_init_std`
(MAE: 2e-5) and bias 0. The linear probe freezes every encoder weight and puts a BatchNorm
without affine parameters in front of the head (MAE's trick for un-normalised features);
that BatchNorm is folded into the head when saved, so the checkpoint is a plain ViT.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maelens.errors import MaelensError
from maelens.model.config import ViTConfig, preset
from maelens.model.taps import Taps
from maelens.model.vit import VisionTransformer
from maelens.train._checks import resolve_device
from maelens.train.args import ClassifierArgs, FinetuneArgs, TrainViTArgs
from maelens.train.data import TrainData, load_eval_data, load_training_data
from maelens.train.evaluate import accuracy
from maelens.train.loop import LoopSpec, StepReport, run_loop
from maelens.train.optim import build_adamw
from maelens.train.pretrain import check_data_fits
from maelens.train.result import TrainResult, write_result
from maelens.train.state import check_architecture

log = logging.getLogger(__name__)

# Source keys that never reach a classifier: the MAE decoder and the old head.
_DROPPED_PREFIXES = ("decoder_", "mask_token", "head.")


class Classifier(nn.Module):
    """A ViT with a head, plus (for linear probing) a BatchNorm without affine parameters on
    the pooled features. forward: pixels (B, C, H, W) -> logits (B, num_classes)."""

    def __init__(self, vit: VisionTransformer, frozen_encoder: bool = False) -> None:
        super().__init__()
        self.vit = vit
        self.frozen_encoder = frozen_encoder
        self.feature_norm = (nn.BatchNorm1d(vit.config.embed_dim, affine=False, eps=1e-6)
                             if frozen_encoder else None)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.feature_norm is None:
            return self.vit.classify(pixels)
        pooled = self.vit(pixels, taps=Taps(final=False, pooled=True)).pooled  # (B, D)
        return self.vit.head(self.feature_norm(pooled))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen_encoder:
            self.vit.eval()  # frozen features: no stochastic depth, ever
        return self

    @torch.no_grad()
    def export(self) -> VisionTransformer:
        """A copy of the ViT alone, the BatchNorm (if any) folded into the head:
        W' = W / sqrt(var + eps), b' = b - W' mean (computed in float64)."""
        vit = copy.deepcopy(self.vit).eval()
        if self.feature_norm is not None:
            norm, head = self.feature_norm, vit.head
            scale = (norm.running_var.double() + norm.eps).rsqrt()  # (D,)
            weight = head.weight.double() * scale[None, :]  # (C, D)
            bias = head.bias.double() - weight @ norm.running_mean.double()
            head.weight.copy_(weight.to(head.weight.dtype))
            head.bias.copy_(bias.to(head.bias.dtype))
        return vit


def classifier_config(source: ViTConfig, args: ClassifierArgs, num_classes: int,
                      linear_probe: bool = False) -> ViTConfig:
    """The classifier built on `source`'s encoder: no decoder, `num_classes` outputs, the head
    layout of `args.pool` (a linear probe keeps the encoder's norms, frozen)."""
    changes: dict[str, Any] = {"decoder_depth": 0, "num_classes": num_classes,
                               "pool": args.pool, "norm_pix_loss": False}
    if linear_probe:
        return source.replace(**changes, drop_path_rate=0.0)
    return source.replace(**changes, final_norm=args.pool == "cls", fc_norm=args.pool == "avg",
                          drop_path_rate=args.drop_path)


def build_classifier(config: ViTConfig, seed: int, head_init_std: float) -> VisionTransformer:
    """`VisionTransformer(config)` initialised after `torch.manual_seed(seed)` (on the CPU,
    the caller's global random state untouched), head re-drawn trunc-normal(std), bias 0."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(config)
        with torch.no_grad():
            nn.init.trunc_normal_(model.head.weight, std=head_init_std)
            nn.init.zeros_(model.head.bias)
    return model


def load_encoder(model: VisionTransformer, source_state: dict[str, torch.Tensor]) -> None:
    """Copy the encoder weights of `source_state` into `model`; the head is left fresh, and so
    are `norm` / `fc_norm` when the source has none (LayerNorm init: the identity)."""
    config = model.config
    state = {k: v for k, v in source_state.items() if not k.startswith(_DROPPED_PREFIXES)}
    if not config.final_norm:
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
    if not config.fc_norm:
        state = {k: v for k, v in state.items() if not k.startswith("fc_norm.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    fresh = [k for k in missing if not k.startswith(("head.", "norm.", "fc_norm."))]
    if fresh or unexpected:
        raise MaelensError(
            f"the checkpoint's encoder does not fit the model: missing {fresh[:5]}, unexpected "
            f"{list(unexpected)[:5]}; fix: fine-tune from a ViT / MAE encoder checkpoint."
        )
    renewed = [k for k in missing if not k.startswith("head.")]
    if renewed:
        log.info("initialised fresh (not in the checkpoint): %s", renewed)


def _read_source(path: str) -> tuple[ViTConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, float32 state dict, description) of any checkpoint `load_model` accepts."""
    from maelens.checkpoints.load import load_model
    from maelens.checkpoints.native import is_native, read_native

    model = load_model(path)
    state = {k: v.detach().float() if v.is_floating_point() else v.detach()
             for k, v in model.state_dict().items()}
    info = dict(getattr(model, "load_info", {}) or {})
    described = {"path": str(path), "format": info.get("format"), "kind": info.get("kind")}
    if is_native(path):
        meta = read_native(path)[2]
        described.update(trained_as=meta.get("kind"), seed=meta.get("seed"),
                         metrics=meta.get("metrics"))
    return model.config, state, described


def finetune(args: FinetuneArgs, *, data: TrainData | None = None,
             eval_data: TrainData | None = None,
             callback: Callable[[StepReport], None] | None = None) -> TrainResult:
    """Fine-tune (or linear-probe, `args.linear_probe`) the encoder of `args.checkpoint` on
    labelled data; write the classifier to `args.out_dir` and report held-out accuracy.

    The data is normalised with the checkpoint's mean / std. data / eval_data / callback: as
    in `pretrain`.
    """
    device = resolve_device(args.device)
    from_args = data is None
    source_config, source_state, source = _read_source(args.checkpoint)
    if args.preset is not None:
        check_architecture(source_config, preset(args.preset), source="checkpoint")
    if data is None:
        data = load_training_data(args.data, "train", source_config.image_size,
                                  tuple(source_config.mean), tuple(source_config.std))
    if (data.mean, data.std) != (tuple(source_config.mean), tuple(source_config.std)):
        log.warning("the data is normalised with mean %s / std %s, the checkpoint expects %s / "
                    "%s", data.mean, data.std, source_config.mean, source_config.std)
    config = classifier_config(source_config, args, data.num_classes, args.linear_probe)
    check_data_fits(config, data)
    vit = build_classifier(config, args.seed, args.head_init_std)
    load_encoder(vit, source_state)
    if args.linear_probe:
        for name, param in vit.named_parameters():
            param.requires_grad_(name.startswith("head."))
    module = Classifier(vit, frozen_encoder=args.linear_probe).to(device)
    layer_decay = 1.0 if args.linear_probe else args.layer_decay
    optimizer = build_adamw(vit, args.lr, args.weight_decay, args.betas, layer_decay)
    kind = "linear_probe" if args.linear_probe else "finetune"
    return _train_classifier(kind, args, module, optimizer, config, data,
                             _held_out(args, config, eval_data, from_args), device, callback,
                             {"source": source})


def train_vit(args: TrainViTArgs, *, data: TrainData | None = None,
              eval_data: TrainData | None = None,
              callback: Callable[[StepReport], None] | None = None) -> TrainResult:
    """Train a ViT classifier from scratch (the supervised baseline): the encoder of `preset`
    (+ `overrides`), no decoder, the head of `args.pool`. Arguments as in `finetune`."""
    device = resolve_device(args.device)
    from_args = data is None
    base = preset(args.preset, **args.overrides)
    data = data if data is not None else load_training_data(args.data, "train", base.image_size)
    config = classifier_config(base.replace(mean=data.mean, std=data.std), args,
                               data.num_classes)
    check_data_fits(config, data)
    vit = build_classifier(config, args.seed, args.head_init_std)
    module = Classifier(vit).to(device)
    optimizer = build_adamw(vit, args.lr, args.weight_decay, args.betas)
    return _train_classifier("supervised", args, module, optimizer, config, data,
                             _held_out(args, config, eval_data, from_args), device, callback, {})


def _held_out(args: ClassifierArgs, config: ViTConfig, eval_data: TrainData | None,
              from_args: bool) -> TrainData | None:
    """The given held-out set; else, when the training data came from `args.data`, its test
    split (or `args.eval_data`); in-memory training data without eval_data: none."""
    if eval_data is not None or not from_args:
        return eval_data
    return load_eval_data(args.data, args.eval_data, config)


def _train_classifier(
    kind: str, args: ClassifierArgs, module: Classifier, optimizer: torch.optim.Optimizer,
    config: ViTConfig, data: TrainData, eval_data: TrainData | None, device: torch.device,
    callback: Callable[[StepReport], None] | None, extra: dict[str, Any],
) -> TrainResult:
    if eval_data is not None and eval_data.class_names != data.class_names:
        raise MaelensError(
            f"held-out classes {list(eval_data.class_names)[:5]} differ from the training "
            f"classes {list(data.class_names)[:5]}; fix: evaluate on the same classes."
        )

    def step_loss(pixels: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                  index: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(module(pixels), labels, label_smoothing=args.label_smoothing)

    def evaluate() -> dict[str, float]:
        return {"test_accuracy": accuracy(module, eval_data.images, eval_data.labels,
                                          device=device)}

    spec = LoopSpec(kind=kind, module=module, optimizer=optimizer, step_loss=step_loss,
                    data=data, args=args, config=config, device=device,
                    evaluate=evaluate if eval_data is not None else None)
    outcome = run_loop(spec, callback)
    model = module.export()
    metrics = {} if eval_data is None else {
        "test_accuracy": accuracy(model, eval_data.images, eval_data.labels, device=device)}
    log.info("%s: %s", kind, metrics)
    extra = {**extra, "eval_data": eval_data.description if eval_data is not None else None}
    return write_result(spec, outcome, model, metrics, extra)
