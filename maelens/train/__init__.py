"""Training: MAE pre-training, fine-tuning / linear probing, and a supervised ViT baseline.

Each command is one function taking a frozen args dataclass and returning a `TrainResult`:
`pretrain(PretrainArgs(...))`, `finetune(FinetuneArgs(...))`, `train_vit(TrainViTArgs(...))`.
They share one loop (`maelens.train.loop`): per-step warm-up + cosine lr, AdamW without decay
on biases / norms / tokens, gradient clipping, seeded augmentation and masking, atomic resume
state, a progress bar. `maelens.train.evaluate` scores classifiers and frozen features.
"""

from maelens.train.args import FinetuneArgs, PretrainArgs, TrainArgs, TrainViTArgs
from maelens.train.augment import augment_batch, random_hflip, random_shift
from maelens.train.data import TrainData, load_eval_data, load_training_data
from maelens.train.evaluate import (
    accuracy,
    feature_accuracies,
    knn_accuracy,
    linear_probe_accuracy,
    mean_patch_features,
)
from maelens.train.finetune import finetune, train_vit
from maelens.train.loop import StepReport
from maelens.train.optim import build_adamw, param_groups
from maelens.train.pretrain import pretrain
from maelens.train.result import TrainResult
from maelens.train.schedule import WarmupCosine
from maelens.train.state import STATE_FILE, check_architecture

__all__ = [
    "STATE_FILE",
    "FinetuneArgs",
    "PretrainArgs",
    "StepReport",
    "TrainArgs",
    "TrainData",
    "TrainResult",
    "TrainViTArgs",
    "WarmupCosine",
    "accuracy",
    "augment_batch",
    "build_adamw",
    "check_architecture",
    "feature_accuracies",
    "finetune",
    "knn_accuracy",
    "linear_probe_accuracy",
    "load_eval_data",
    "load_training_data",
    "mean_patch_features",
    "param_groups",
    "pretrain",
    "random_hflip",
    "random_shift",
    "train_vit",
]
