"""Scale-out, measured side by side in one run on this CPU:

1. images/s of decoding + preprocessing a folder of JPEGs (made here, 500x375 like ImageNet
   val) with 0, 1 and 2 DataLoader workers (`maelens.data.loader.decode_batches`);
2. a 2-rank gloo run against a 1-rank run of the same experiment (the demo MAE's layer-wise
   stage on 600 MNIST digits), with the check that both give the same numbers.

On 2 cores expect little gain from either; the point is the correct scaling path.

    python bench/bench_scale.py [--images 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from maelens.data.loader import decode_batches
from maelens.data.preprocess import Preprocess


def make_jpegs(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((500, 375), Image.BICUBIC)
        path = folder / f"{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def decode_rate(paths: list[Path], workers: int) -> float:
    start = time.perf_counter()
    n = sum(len(b.index) for b in decode_batches(paths, Preprocess(224), 32, workers=workers))
    return n / (time.perf_counter() - start)


def experiment(rank: int, size: int) -> dict[str, np.ndarray]:
    from maelens.analyses.attention_distance import AttentionDistance
    from maelens.analyses.embeddings import LayerEmbeddings
    from maelens.analyses.subspaces import ClassSubspaces
    from maelens.checkpoints.load import load_model
    from maelens.engine.distributed import World, gather_to_main, shard_range
    from maelens.engine.plan import PassPlan
    from maelens.studies.inputs import load_image_set

    torch.set_num_threads(1)
    images = load_image_set("mnist:test", 32).per_class(10, 60)
    world = World(rank, size)
    start, stop = shard_range(len(images), world)
    analyses = [LayerEmbeddings(), ClassSubspaces(k=5), AttentionDistance()]
    plan = PassPlan(load_model("demo:mae"))
    for analysis in analyses:
        plan.add(analysis)
    plan.feed(images.batches(50, start, stop))
    if gather_to_main(analyses, world):
        return {f"{a.name}/{k}": v for a in analyses for k, v in a.result().arrays.items()}
    return {}


def _rank(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(seconds=300))
    arrays = experiment(rank, size)
    if rank == 0:
        torch.save(arrays, out)
    dist.barrier()
    dist.destroy_process_group()


def run_ranks(size: int, out: str) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    mp.spawn(_rank, args=(size, port, out), nprocs=size, join=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        rates: dict[int, list[float]] = {w: [] for w in (0, 1, 2)}
        for _ in range(args.rounds):
            for workers in rates:
                rates[workers].append(decode_rate(paths, workers))
        print(f"decode + preprocess {args.images} JPEGs (500x375 -> 224), median of "
              f"{args.rounds} interleaved rounds:")
        base = statistics.median(rates[0])
        for workers, values in rates.items():
            rate = statistics.median(values)
            print(f"  {workers} workers: {rate:7.1f} images/s  ({rate / base:.2f}x)")
        one, two = Path(tmp) / "one.pt", Path(tmp) / "two.pt"
        times = {1: [], 2: []}
        for _ in range(args.rounds):
            for size, path in ((1, one), (2, two)):
                times[size].append(run_ranks(size, str(path)))
        a, b = torch.load(one, weights_only=False), torch.load(two, weights_only=False)
        worst = max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(a[k]) + 1e-12)))
                    for k in a if np.issubdtype(a[k].dtype, np.floating))
        t1, t2 = statistics.median(times[1]), statistics.median(times[2])
        print("demo MAE layer-wise stage on 600 digits (embeddings, subspaces, attention):")
        print(f"  1 rank: {t1:6.1f} s   2 gloo ranks: {t2:6.1f} s   speed-up {t1 / t2:.2f}x")
        print(f"  largest relative difference between the two: {worst:.1e} (target <= 1e-6)")


if __name__ == "__main__":
    main()
