"""Capture throughput of maelens vs transformers, measured side by side in one run.

ViT-B/16 at 224x224, batch 8, on the CPU with 2 threads (override with --threads/--batch).
Each variant lives in its own worker process, so that one variant's memory state cannot help or
hurt another's (retained activations change how the allocator serves everyone in a process).
The main process asks the workers in turn for one timed batch, for several interleaved rounds,
and reports the median; the machine is shared, so only the ratios are meant to be compared.
Minor page faults per batch are printed because they are where tapped passes lose time.

Targets (issue 2):
  all-taps maelens >= 1.2x transformers eager with output_attentions + output_hidden_states
  hidden-states-only maelens >= 0.95x transformers SDPA without outputs
Then the bfloat16 capture: speed-up over float32 (target: all taps >= 3.2x) and fidelity (cosine
of final mean-patch embeddings vs float32, top-1 agreement) on ViT-B/16 and on the demo
fine-tuned MAE; and the attention path of one ViT-B/16 layer per dtype (fused SDPA vs explicit
matmul + softmax), the measurement behind `maelens.model.vit.fused_attention_is_faster`.

    python bench/bench_capture.py [--rounds 5] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")

FP32 = {
    "maelens, no taps": "mae:none",
    "maelens, all hidden states": "mae:hidden",
    "maelens, all taps": "mae:all",
    "maelens CLI (keeps freed memory), all taps": "cli:all",
    "transformers SDPA, no outputs": "hf:sdpa",
    "transformers eager, attentions + hidden states": "hf:eager",
}
BF16 = {
    "float32, no taps": "mae:none",
    "bfloat16, no taps": "mae16:none",
    "float32, all taps": "mae:all",
    "bfloat16, all taps": "mae16:all",
}


def hf_model(attn: str, image_size: int) -> torch.nn.Module:
    """A ViTMAEModel with fixed random weights (same seed in every process)."""
    from transformers import ViTMAEConfig, ViTMAEModel

    torch.manual_seed(0)
    config = ViTMAEConfig(image_size=image_size, mask_ratio=0.0, layer_norm_eps=1e-6,
                          attn_implementation=attn)
    return ViTMAEModel(config).eval()


def build(variant: str, batch: int, image_size: int) -> Callable[[], object]:
    """A zero-argument callable running one batch of `variant`."""
    from maelens.checkpoints.load import load_model
    from maelens.model.taps import Taps, TapStore

    kind, taps = variant.split(":")
    if kind == "cli":
        from maelens.engine.capture import keep_freed_memory

        keep_freed_memory()
        kind = "mae"
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    if kind == "hf":
        model = hf_model(taps, image_size)
        patches = (image_size // model.config.patch_size) ** 2
        noise = torch.arange(patches).expand(batch, -1).float()
        extra = {"output_attentions": True, "output_hidden_states": True} if taps == "eager" else {}
        return lambda: model(x, noise=noise, **extra)
    model = load_model(hf_model("sdpa", image_size))  # the same weights as transformers'
    if kind == "mae16":
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    request = {"none": Taps(), "hidden": Taps(hidden=None),
               "all": Taps(hidden=None, attn=None, heads=None)}[taps]
    store = TapStore(reuse=True)  # as `run_capture` does
    return lambda: model(x, taps=request, store=store)


def worker(conn, variant: str, batch: int, image_size: int, threads: int) -> None:  # noqa: ANN001
    torch.set_num_threads(threads)
    run = build(variant, batch, image_size)
    with torch.inference_mode():
        run()  # warm-up
        while conn.recv():
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            conn.send((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))


def measure(variants: dict[str, str], args: argparse.Namespace) -> dict[str, tuple[float, int]]:
    """{name: (images/s median, minor page faults per batch median)}."""
    ctx = mp.get_context("spawn")
    workers = {}
    for name, variant in variants.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, variant, args.batch, args.image_size,
                                                args.threads))
        proc.start()
        workers[name] = (parent, proc)
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (conn, _) in workers.items():
            conn.send(True)
            samples[name].append(conn.recv())
    for conn, proc in workers.values():
        conn.send(False)
        proc.join()
    return {name: (args.batch / statistics.median(s for s, _ in runs),
                   int(statistics.median(f for _, f in runs)))
            for name, runs in samples.items()}


def show(title: str, results: dict[str, tuple[float, int]]) -> None:
    print(title)
    for name, (ips, faults) in results.items():
        print(f"  {name:48s} {ips:7.2f} images/s  {faults:7d} page faults/batch")


def bf16_fidelity(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[float, float]:
    """(mean cosine of final mean-patch embeddings bf16 vs fp32, top-1 agreement)."""
    from maelens.checkpoints.load import load_model
    from maelens.model.taps import Taps

    taps = Taps(final=True, logits=model.head is not None)
    low_model = load_model(model, dtype=torch.bfloat16)
    with torch.inference_mode():
        ref = model(pixels, taps=taps)
        low = low_model(pixels.to(torch.bfloat16), taps=taps).map(lambda t: t.float())
    cos = F.cosine_similarity(ref.mean_patch(), low.mean_patch(), dim=-1).mean().item()
    agree = float("nan")
    if ref.logits is not None:
        agree = (ref.logits.argmax(-1) == low.logits.argmax(-1)).float().mean().item()
    return cos, agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"ViT-B/16 {args.image_size}px, batch {args.batch}, {args.threads} threads, "
          f"one worker process per variant, median of {args.rounds} interleaved rounds")
    speed = measure(FP32, args)
    show("float32", speed)
    ips = {name: value[0] for name, value in speed.items()}
    eager = ips["transformers eager, attentions + hidden states"]
    all_ratio = ips["maelens, all taps"] / eager
    cli_ratio = ips["maelens CLI (keeps freed memory), all taps"] / eager
    hid_ratio = ips["maelens, all hidden states"] / ips["transformers SDPA, no outputs"]
    print(f"  ratio all-taps / transformers eager:     {all_ratio:.2f}x (target >= 1.20)")
    print(f"  ratio CLI all-taps / transformers eager: {cli_ratio:.2f}x (target >= 1.20)")
    print(f"  ceiling, maelens no taps / eager:        {ips['maelens, no taps'] / eager:.2f}x "
          "(what free taps would give)")
    print(f"  ratio hidden-only / transformers SDPA:   {hid_ratio:.2f}x (target >= 0.95)")
    speed = measure(BF16, args)
    show("bfloat16 capture", speed)
    for kind in ("no taps", "all taps"):
        up = speed[f"bfloat16, {kind}"][0] / speed[f"float32, {kind}"][0]
        target = " (target >= 3.20)" if kind == "all taps" else ""
        print(f"  speed-up bf16 / fp32, {kind}: {up:.2f}x{target}")
    gemm = gemm_ratio(args)
    up = speed["bfloat16, all taps"][0] / speed["float32, all taps"][0]
    print(f"  bf16 / fp32 GEMM ratio on this CPU (ViT-B MLP shape): {gemm:.2f}x; all-taps "
          f"capture reaches {up / gemm:.0%} of it")
    attention_paths(args)
    fidelity()


def gemm_ratio(args: argparse.Namespace) -> float:
    """Speed of one ViT-B/16 fc1 GEMM (B*197 x 768 -> 3072) in bf16 over fp32: the ceiling of
    any bf16 speed-up of a pass that is mostly linear layers."""
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(args.batch * 197, 768).to(dtype)
        w = torch.randn(3072, 768).to(dtype)
        runs = []
        for _ in range(args.rounds * 4):
            start = time.perf_counter()
            F.linear(a, w)
            runs.append(time.perf_counter() - start)
        times[dtype] = min(runs)
    return times[torch.float32] / times[torch.bfloat16]


def attention_paths(args: argparse.Namespace) -> None:
    """Time one ViT-B/16 attention (B, 12 heads, 197 tokens, d_head 64) both ways per dtype."""
    from maelens.model.vit import fused_attention_is_faster

    print("attention path, one ViT-B/16 layer (median ms, interleaved)")
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(args.batch, 12, 197, 64, generator=torch.Generator()
                               .manual_seed(s)).to(dtype) for s in range(3))
        paths = _attention_paths(q, k, v)
        times: dict[str, list[float]] = {name: [] for name in paths}
        with torch.inference_mode():
            for _ in range(args.rounds * 2):
                for name, run in paths.items():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
            chosen = "fused SDPA" if fused_attention_is_faster(q) else "explicit"
        cells = ", ".join(f"{n} {1e3 * statistics.median(s):6.1f}" for n, s in times.items())
        print(f"  {str(dtype):15s} {cells}   maelens uses: {chosen}")


def _attention_paths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                     ) -> dict[str, Callable[[], torch.Tensor]]:
    from maelens.model.vit import _softmax_

    def explicit() -> torch.Tensor:
        return torch.matmul(_softmax_(torch.matmul(q * 0.125, k.transpose(-2, -1))), v)

    return {"fused SDPA": lambda: F.scaled_dot_product_attention(q, k, v), "explicit": explicit}


def fidelity() -> None:
    from maelens.checkpoints.load import load_model
    from maelens.data import mnist_tensors

    model = load_model(hf_model("sdpa", 224))
    pixels = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    cos, _ = bf16_fidelity(model, pixels)
    print(f"  fidelity ViT-B/16 (random weights, random inputs): cosine of final mean-patch "
          f"embeddings {cos:.5f}")
    model = load_model("demo:finetuned")
    pixels, _ = mnist_tensors("test")
    cos, agree = bf16_fidelity(model, pixels)
    print(f"  fidelity demo fine-tuned MAE, MNIST test ({len(pixels)} images): cosine "
          f"{cos:.5f}, top-1 agreement {100 * agree:.2f} %")


if __name__ == "__main__":
    main()
