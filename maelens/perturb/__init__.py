"""Perturbations of [0, 1] RGB images at the model's input size, before normalisation:
Gaussian blur, attention-rollout-guided occlusion, ImageNet-C corruptions, and the image
quality metrics (PSNR, SSIM) that measure them."""
