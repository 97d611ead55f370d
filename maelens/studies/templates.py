"""Commented experiment files written by `maelens init` (every field, with its default)."""

from __future__ import annotations

COMMON = """\
data:
  images: {images}          # image folder, ImageNet layout (class folders), mnist[:split], photos
  second_images: photos     # second image set: attention distance and corruption examples
  imagenet_c: {imagenet_c}  # an on-disk ImageNet-C tree <corruption>/<severity>/<class>/...
  crop_pct: 0.875           # resize the shorter side to size / crop_pct, then centre-crop

layerwise:                  # seed paper Sec. III-A, Fig. 1-4 (pre-trained MAE vs ViT)
  enabled: true
  mask_ratio: {mask_ratio}           # the paper analyses embeddings with 75 % of patches masked
  layers: all               # 'all', 'lastN' or e.g. '0,6,12'
  tsne:                     # Fig. 1 (CLS, mean patch) and Fig. 2 (patch tokens)
    classes: 3
    per_class: {tsne_per_class}
    perplexity: 30.0
    iterations: 750
    patch_tokens: 2000      # patch tokens per layer, stratified by class
  subspaces:                # Fig. 4: principal angles between class subspaces
    classes: 10
    per_class: {subspace_per_class}
    k: 10                   # directions per class subspace
    centred: false          # the paper's X_C is un-centred
  attention:                # Fig. 3: mean attention distance per head and layer
    cls_policy: exclude     # exclude CLS as query and key, renormalise rows; or raw
  separability:             # k-NN, linear probe, silhouette, Fisher ratio, CKA per layer
    classes: null
    per_class: null

robustness:                 # seed paper Sec. III-B, Tables I-III, Fig. 5-8 (fine-tuned model)
  enabled: true
  classes: 10
  per_class: {robust_per_class}
  blur: paper               # the ten (kernel, sigma) levels of Table I, or [[5, 1.0], ...]
  occlusion: {occlusion}   # percent of patches, by rollout
  occlusion_fill: zero      # zero | mean | noise (pixel fill); token dropping runs too
  corruptions: all          # the 15 ImageNet-C corruptions, or a list of names
  severities: {severities}
  masks: {masks}                # random masks per image for the invariance study
  mask_ratio: 0.75
  top_k: 10                 # head-wise common features: top-k per head (Eq. 2-3)
  threshold: 0.6            # common when in the top-k of >= 60 % of a class's images
  bootstrap: {bootstrap}            # bootstrap draws for 95 % confidence intervals (0: none)

theory:                     # seed 002: predicted spatial scale at the models' (m, p)
  enabled: true

run:
  seed: 0
  device: {device}               # cpu | cuda | cuda:N
  dtype: {dtype}            # float32 | bfloat16 | float16
  batch_size: {batch_size}
  workers: null             # image decoding processes (null: from the CPU count)
  out: {out}
"""

DEMO = """\
# maelens demo: the three shipped demo models on the MNIST demo digits (no download).
# Run: maelens run THIS_FILE   (or simply: maelens demo). Sized to run in minutes on 2 CPU
# cores: robustness on 50 digits, severities 1/3/5, 10 random masks; the paper's recipe
# (maelens init --example paper-imagenet) uses every level.
models:
  mae: demo:mae             # pre-trained MAE (layer-wise analyses)
  finetuned: demo:finetuned # the MAE fine-tuned (robustness)
  vit: demo:vit             # supervised ViT of the same shape (comparison)

""" + COMMON.format(images="mnist:test", imagenet_c="null", mask_ratio="0.75",
                    tsne_per_class=30, subspace_per_class=50, robust_per_class=5, masks=10,
                    occlusion="[0, 10, 30, 50, 70, 90]", severities="[1, 3, 5]",
                    bootstrap=" 500", device="cpu ", dtype="float32", batch_size=250,
                    out="out/demo")

PAPER_IMAGENET = """\
# The seed paper's recipe on ImageNet val (Robust Representation Learning in MAEs).
# Needs: ImageNet val in class folders (n01440764/..., the usual valprep layout) and the
# official checkpoints (downloaded by name on first use; MAE weights are CC-BY-NC 4.0).
# Run on a GPU machine: maelens run examples/paper-imagenet.yaml
models:
  mae: mae-base             # official MAE ViT-B/16 pre-trained (mae_pretrain_vit_base.pth)
  finetuned: mae-base-finetuned   # official MAE ViT-B/16 fine-tuned (83.6 % top-1)
  vit: vit-base-supervised  # a supervised ViT-B/16 (google/vit-base-patch16-224)

""" + COMMON.format(images="/data/imagenet/val", imagenet_c="null", mask_ratio="0.75",
                    tsne_per_class=30, subspace_per_class=50, robust_per_class=50, masks=100,
                    occlusion="[0, 10, 20, 30, 40, 50, 60, 70, 80, 90]",
                    severities="[1, 2, 3, 4, 5]", bootstrap="1000",
                    device="cuda", dtype="bfloat16", batch_size=128, out="out/paper-imagenet")

TEMPLATES = {"demo": DEMO, "paper-imagenet": PAPER_IMAGENET}
