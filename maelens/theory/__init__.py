"""Linear-MAE theory: mask moments, exact expected losses, the closed-form rank-k optimum,
covariances with known correlation length, spatial-scale metrics, probes, and (m, p) predictions.

Conventions: float64 NumPy; rows are samples, x̂ = (r ⊙ x) W with W (d, d), W_ij = influence
of input i on output j; spatial metrics take the Jacobian layout (d_out, d_in) = Wᵀ. Images
flatten (H, W, C) channel-last; distances and lengths are in pixels.
"""

from maelens.theory.closed_form import (
    LinearMAESolution,
    denoising_ae_optimum,
    full_rank_optimum,
    linear_mae_optimum,
    mae_spectrum,
    masked_second_moment,
    optimum_grid,
    reduced_rank_solution,
)
from maelens.theory.covariance import (
    KERNELS,
    CovarianceAccumulator,
    EmpiricalCovariance,
    empirical_covariance,
    gaussian_samples,
    ising_covariance,
    kernel_covariance,
    kernel_values,
    labeled_images_covariance,
    resize_images,
    rho_from_coupling,
)
from maelens.theory.loss import ExpectedLoss, expected_loss, target_weights
from maelens.theory.masked_only import NumericalSolution, masked_only_full_rank, solve_linear_mae
from maelens.theory.masks import (
    MaskMoments,
    fixed_count_kept,
    keep_second_moment,
    mask_moments,
    sample_keep_masks,
)
from maelens.theory.partition import Partition, blocks_1d, partition_for, tiles_2d
from maelens.theory.predict import (
    GRID_METRICS,
    Recommendation,
    SpreadGrid,
    luminance_covariance,
    predict_grid,
    recommend,
)
from maelens.theory.probes import (
    gabor_target,
    gabor_targets,
    population_r2,
    ridge_probe_r2,
    sampled_probe_r2,
)
from maelens.theory.spatial import (
    BoundaryEmphasis,
    CorrelationLength,
    InfluenceProfile,
    boundary_emphasis,
    correlation_length,
    influence_profile,
    out_of_patch_mass,
    pixel_distances,
    spatial_entropy,
    weighted_mean_distance,
)

__all__ = [
    "GRID_METRICS",
    "KERNELS",
    "BoundaryEmphasis",
    "CorrelationLength",
    "CovarianceAccumulator",
    "EmpiricalCovariance",
    "ExpectedLoss",
    "InfluenceProfile",
    "LinearMAESolution",
    "MaskMoments",
    "NumericalSolution",
    "Partition",
    "Recommendation",
    "SpreadGrid",
    "blocks_1d",
    "boundary_emphasis",
    "correlation_length",
    "denoising_ae_optimum",
    "empirical_covariance",
    "expected_loss",
    "fixed_count_kept",
    "full_rank_optimum",
    "gabor_target",
    "gabor_targets",
    "gaussian_samples",
    "influence_profile",
    "ising_covariance",
    "keep_second_moment",
    "kernel_covariance",
    "kernel_values",
    "labeled_images_covariance",
    "linear_mae_optimum",
    "luminance_covariance",
    "mae_spectrum",
    "mask_moments",
    "masked_only_full_rank",
    "masked_second_moment",
    "optimum_grid",
    "out_of_patch_mass",
    "partition_for",
    "pixel_distances",
    "population_r2",
    "predict_grid",
    "recommend",
    "reduced_rank_solution",
    "resize_images",
    "rho_from_coupling",
    "ridge_probe_r2",
    "sample_keep_masks",
    "sampled_probe_r2",
    "solve_linear_mae",
    "spatial_entropy",
    "target_weights",
    "tiles_2d",
    "weighted_mean_distance",
]
