"""Capture throughput of maelens vs transformers, measured side by side in one run.

ViT-B/16 at 224x224, batch 8, on the CPU with 2 threads (override with --threads/--batch).
Variants run interleaved for several rounds and the median is reported, because the machine is
shared and noisy; only the ratios are meant to be compared. Targets (issue 2):
  all-taps maelens >= 1.2x transformers eager with output_attentions + output_hidden_states
  hidden-states-only maelens >= 0.95x transformers SDPA without outputs
Then the bfloat16 capture: speed-up over float32 and fidelity (cosine of final mean-patch
embeddings vs float32, top-1 agreement) on ViT-B/16 and, when present, on the demo classifier.

    python bench/bench_capture.py [--rounds 5] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from maelens.load import load_model
from maelens.taps import Taps, TapStore

warnings.filterwarnings("ignore")


def hf_models(image_size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import ViTMAEConfig, ViTMAEModel

    torch.manual_seed(0)
    config = dict(image_size=image_size, mask_ratio=0.0, layer_norm_eps=1e-6)
    sdpa = ViTMAEModel(ViTMAEConfig(**config, attn_implementation="sdpa")).eval()
    eager = ViTMAEModel(ViTMAEConfig(**config, attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    return sdpa, eager


def timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def throughput(variants: dict, rounds: int, batch: int) -> dict[str, float]:
    """images/s (median over interleaved rounds) of each zero-argument callable."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for fn in variants.values():  # warm-up: allocator, kernels, caches
            fn()
        for _ in range(rounds):
            for name, fn in variants.items():
                times[name].append(timed(fn))
    return {name: batch / statistics.median(ts) for name, ts in times.items()}


def bf16_fidelity(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[float, float]:
    """(mean cosine of final mean-patch embeddings bf16 vs fp32, top-1 agreement)."""
    taps = Taps(final=True, logits=model.head is not None)
    with torch.inference_mode():
        ref = model(pixels, taps=taps)
        low = model.to(torch.bfloat16)(pixels.to(torch.bfloat16), taps=taps).map(
            lambda t: t.float())
        model.float()
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
    sdpa, eager = hf_models(args.image_size)
    model = load_model(sdpa)  # same weights as the transformers models
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    noise = torch.arange(model.config.num_patches).expand(args.batch, -1).float()
    store = TapStore(reuse=True)
    every = Taps(hidden=None, attn=None, heads=None)
    fp32 = {
        "maelens, no taps": lambda: model(x),
        "maelens, all hidden states": lambda: model(x, taps=Taps(hidden=None), store=store),
        "maelens, all taps": lambda: model(x, taps=every, store=store),
        "transformers SDPA, no outputs": lambda: sdpa(x, noise=noise),
        "transformers eager, attentions + hidden states": lambda: eager(
            x, noise=noise, output_attentions=True, output_hidden_states=True),
    }
    speed = throughput(fp32, args.rounds, args.batch)
    print(f"ViT-B/16 {args.image_size}px, batch {args.batch}, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds")
    for name, ips in speed.items():
        print(f"  {name:48s} {ips:7.2f} images/s")
    all_ratio = speed["maelens, all taps"] / speed[
        "transformers eager, attentions + hidden states"]
    hid_ratio = speed["maelens, all hidden states"] / speed["transformers SDPA, no outputs"]
    print(f"  ratio all-taps / transformers eager:     {all_ratio:.2f}x (target >= 1.20)")
    print(f"  ratio hidden-only / transformers SDPA:   {hid_ratio:.2f}x (target >= 0.95)")
    bench_bf16(model, x, args, store, every)


def bench_bf16(model, x, args, store, every) -> None:  # noqa: ANN001
    model16 = load_model(model).to(torch.bfloat16)  # a copy, so `model` stays float32
    x16 = x.to(torch.bfloat16)
    variants = {
        "float32, no taps": lambda: model(x),
        "bfloat16, no taps": lambda: model16(x16),
        "float32, all taps": lambda: model(x, taps=every, store=store),
        "bfloat16, all taps": lambda: model16(x16, taps=every, store=TapStore(reuse=True)),
    }
    speed = throughput(variants, args.rounds, args.batch)
    print("bfloat16 capture")
    for name, ips in speed.items():
        print(f"  {name:48s} {ips:7.2f} images/s")
    for kind in ("no taps", "all taps"):
        up = speed[f"bfloat16, {kind}"] / speed[f"float32, {kind}"]
        print(f"  speed-up bf16 / fp32, {kind}: {up:.2f}x")
    cos, _ = bf16_fidelity(model, x)
    print(f"  fidelity ViT-B/16 (random weights, random inputs): cosine of final mean-patch "
          f"embeddings {cos:.5f}")
    demo_fidelity()


def demo_fidelity() -> None:
    """Top-1 agreement on real decisions: the demo fine-tuned MAE on the MNIST test split."""
    try:
        from maelens.demo_models import demo_model_path

        from maelens.data import mnist_tensors
    except ImportError:
        print("  (demo models not available: skipping top-1 agreement on real decisions)")
        return
    model = load_model(demo_model_path("finetuned"))
    pixels, labels = mnist_tensors("test")
    cos, agree = bf16_fidelity(model, pixels)
    print(f"  fidelity demo fine-tuned MAE, MNIST test ({len(pixels)} images): cosine {cos:.5f}, "
          f"top-1 agreement {100 * agree:.2f} %")


if __name__ == "__main__":
    main()
