"""Memory and time of the layer-wise geometry analyses (ClassSubspaces + AttentionDistance),
measured side by side in one run, on the demo MAE and the MNIST demo digits ("mnist:all").

1. Bounded memory: each N (250 and 2000 images, N / 10 per digit) runs in a fresh subprocess
   that feeds both analyses (all layers, all kinds) and reports its peak RSS (ru_maxrss). The
   analyses keep fixed-size float64 sums, so the peak must not grow with N: target ratio
   <= 1.2.
2. Overhead: the pass plan with both analyses vs the same plan with a trivial analysis that taps
   the same layers (hidden 0..L, attention 1..L) and reduces nothing; interleaved rounds, the
   fastest of each; target: analyses (feed + result) <= 25 % on top of the forward passes.

The machine is shared: threads (torch and BLAS) default to 1, since a second thread mostly waits
under load, and the CPU time of the process is printed next to the wall time: on a loaded
machine wall time mostly measures the scheduler, CPU time the work. Only ratios compare.

    python bench/bench_layerwise.py [--rounds 3] [--images 2000] [--mask-ratio 0.75]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import resource
import subprocess
import sys
import time

import torch

from maelens.analyses.attention_distance import AttentionDistance
from maelens.analyses.base import Analysis, AnalysisResult, Batch
from maelens.analyses.subspaces import ClassSubspaces
from maelens.checkpoints.load import load_model
from maelens.engine.conditions import CLEAN, Condition, RandomMask
from maelens.engine.plan import PassPlan
from maelens.model.taps import Capture, Taps
from maelens.studies.inputs import load_image_set

SIZES = (250, 2000)


def analyses() -> list[Analysis]:
    return [ClassSubspaces(num_classes=10), AttentionDistance()]


class TapOnly(Analysis):
    """Taps what the two analyses tap and reduces nothing (the forward-pass baseline)."""

    name = "tap_only"
    taps = Taps(hidden=None, attn=None, final=False)

    def update(self, capture: Capture, batch: Batch) -> TapOnly:
        return self

    def result(self) -> AnalysisResult:
        return AnalysisResult(self.name)


@functools.lru_cache(maxsize=4)
def inputs(n_images: int) -> tuple:
    # N / 10 images of each digit (the set is sorted by class: its first N are all zeros)
    return load_model("demo:mae"), load_image_set("mnist:all", 32, per_class=n_images // 10)


def feed(n_images: int, mask_ratio: float, items: list[Analysis], batch_size: int = 64
         ) -> dict[str, float]:
    """CPU seconds of the streaming passes and of the results, and wall seconds of both."""
    model, images = inputs(n_images)
    reference = Condition("m", keep=RandomMask(mask_ratio, 0)) if mask_ratio else CLEAN
    plan = PassPlan(model, reference=reference)
    for item in items:
        plan.add(item)
    cpu, wall = time.process_time(), time.perf_counter()
    plan.feed(images.batches(batch_size))
    streamed = time.process_time()
    for item in items:
        item.result()
    return {"stream": streamed - cpu, "result": time.process_time() - streamed,
            "wall": time.perf_counter() - wall}


def limit_threads(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)  # NumPy / SciPy BLAS and LAPACK (the eigen-decompositions)


def child(n_images: int, mask_ratio: float, threads: int) -> None:
    limit_threads(threads)
    logging.getLogger("maelens").setLevel(logging.ERROR)
    items = analyses()
    seconds = feed(n_images, mask_ratio, items)["wall"]
    state = sum(t.numel() * t.element_size() for a in items for t in a.state_dict().values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    print(json.dumps({"n": n_images, "peak_rss_mib": peak, "state_mib": state / 2**20,
                      "seconds": seconds}))


def spawn(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"worker {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(mask_ratio: float, threads: int) -> None:
    runs = [spawn(str(n), str(mask_ratio), str(threads)) for n in SIZES]
    for run in runs:
        print(f"  N = {run['n']:5d}: peak RSS {run['peak_rss_mib']:7.1f} MiB, analysis state "
              f"{run['state_mib']:5.1f} MiB, {run['seconds']:.1f} s")
    ratio = runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    verdict = "ok" if ratio <= 1.2 else "ABOVE TARGET"
    print(f"  peak RSS ratio N={SIZES[1]} / N={SIZES[0]}: {ratio:.3f} (target <= 1.2: {verdict})")


def overhead(n_images: int, mask_ratio: float, rounds: int) -> None:
    with_analyses, baseline = [], []
    for _ in range(rounds):  # interleaved, so that load changes hit both alike
        baseline.append(feed(n_images, mask_ratio, [TapOnly()]))
        with_analyses.append(feed(n_images, mask_ratio, analyses()))
    best = lambda runs, key: min(r[key] for r in runs)  # noqa: E731
    base = best(baseline, "stream") + best(baseline, "result")
    stream = best(with_analyses, "stream") - best(baseline, "stream")
    result = best(with_analyses, "result")
    total = (stream + result) / base
    wall = best(with_analyses, "wall") / best(baseline, "wall") - 1
    verdict = "ok" if total <= 0.25 else "ABOVE TARGET"
    print(f"  {n_images} images, mask ratio {mask_ratio:g}: forward + taps {base:.2f} s CPU; the "
          f"analyses add {stream:.2f} s while streaming (+{100 * stream / base:.1f} %) and "
          f"{result:.2f} s once in result() (eigen-decompositions, independent of N)")
    print(f"    total +{100 * total:.1f} % CPU, +{100 * wall:.1f} % wall "
          f"(target <= 25 %: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), float(args.child[1]), int(args.child[2]))
        return
    limit_threads(args.threads)
    logging.getLogger("maelens").setLevel(logging.ERROR)  # CLS at layer 0 is rank 1: expected
    print(f"demo MAE, mnist:all, ClassSubspaces (k=10, 3 kinds, layers 0..6) + "
          f"AttentionDistance (layers 1..6), {args.threads} thread(s)")
    print("peak memory, one fresh process per N:")
    memory(args.mask_ratio, args.threads)
    print("time on top of the forward passes (fastest of "
          f"{args.rounds} interleaved rounds):")
    for ratio in sorted({args.mask_ratio, 0.0}, reverse=True):
        overhead(args.images, ratio, args.rounds)


if __name__ == "__main__":
    main()
