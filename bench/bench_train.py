"""Training throughput of the demo models on this CPU, and the wall time of the demo runs.

1. MAE pre-training of the "mae_demo" preset (32x32, patch 4, width 192, depth 6, decoder
   128 x 2), batch 256, mask ratio 0.75, float32, through the real loop (`pretrain`:
   augmentation, masking, AdamW, clipping); images/s per step after --warmup steps.
2. Fine-tuning the same encoder (all 64 patches, pool "avg" + fc_norm head) through `finetune`.
   The ratio of the two is printed: the MAE encoder sees a quarter of the tokens.
3. The wall time, steps and throughput of each demo model's training run, read from the
   checkpoint metadata under maelens/assets/ (absent until the demo models are trained).

The machine is shared and noisy: the median step is reported. Keep --steps small here.

    python bench/bench_train.py [--steps 5] [--warmup 2] [--batch 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from maelens.train import FinetuneArgs, PretrainArgs, TrainData, finetune, pretrain

ASSETS = Path(__file__).resolve().parents[1] / "maelens" / "assets"


def synthetic(n: int) -> TrainData:
    """Random normalised 32x32 images with 10 labels (throughput does not depend on content)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 32, 32, generator=g)
    return TrainData(images, torch.arange(n) % 10, tuple(str(i) for i in range(10)))


def timed(run, steps: int, warmup: int) -> float:  # noqa: ANN001 - a callable taking a callback
    """Median images/s over the steps after `warmup`."""
    rates: list[float] = []
    run(lambda report: rates.append(report.images_per_s))
    return statistics.median(rates[warmup:warmup + steps])


def measure(batch: int, steps: int, warmup: int, work: Path) -> tuple[float, float]:
    data = synthetic(batch * (steps + warmup))
    common = {"epochs": 1, "batch_size": batch, "warmup_epochs": 0.0, "progress": False,
              "device": "cpu", "checkpoint_every": 0}
    pre = PretrainArgs(out_dir=str(work / "mae"), evaluate_features=False, **common)
    mae_rate = timed(lambda cb: pretrain(pre, data=data, callback=cb), steps, warmup)
    ft = FinetuneArgs(out_dir=str(work / "ft"), checkpoint=str(work / "mae"), **common)
    ft_rate = timed(lambda cb: finetune(ft, data=data, callback=cb), steps, warmup)
    return mae_rate, ft_rate


def demo_runs() -> list[dict]:
    """The training record of each shipped demo model (read from its checkpoint metadata)."""
    from maelens.checkpoints.demo_models import DEMO_MODELS
    from maelens.checkpoints.native import read_native

    rows = []
    for name, file in DEMO_MODELS.items():
        if (ASSETS / file).is_file():
            meta = read_native(ASSETS / file)[2]
            if "wall_time_s" in meta:
                rows.append({"model": name, **meta})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, float32, "
          f"median of {args.steps} steps after {args.warmup} warm-up steps")
    with tempfile.TemporaryDirectory() as work:
        mae_rate, ft_rate = measure(args.batch, args.steps, args.warmup, Path(work))
    print(f"MAE pre-training (mae_demo, mask 0.75): {mae_rate:8.1f} images/s")
    print(f"fine-tuning (same encoder, 64 patches): {ft_rate:8.1f} images/s")
    print(f"ratio pre-training / fine-tuning:       {mae_rate / ft_rate:8.2f}x")
    rows = demo_runs()
    if not rows:
        print(f"demo runs: no trained demo checkpoints under {ASSETS} yet")
    for row in rows:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in (row.get("metrics") or {}).items())
        print(f"demo {row['model']:<24} {row.get('kind', '?'):<13} "
              f"{row['wall_time_s'] / 60:6.1f} min, {row.get('steps')} steps, "
              f"{row.get('images_per_s') or float('nan'):6.1f} images/s on {row.get('device')} "
              f"x{row.get('threads')}  {metrics}")


if __name__ == "__main__":
    main()
