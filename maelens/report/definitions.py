"""The text of every report section: its title, a one-line reading and the definition (HTML).

A *reading* is one plain-text line under the section title (escaped by `maelens.report.html`):
what the figure or table shows and what to look for, never a result. A *definition* is the
HTML shown under "Definitions": how each number is computed, in which unit, with the seed
paper's equation / figure / table numbers and where maelens differs from or adds to the paper.
Definitions hold only <p>, <code>, <sub>, <sup>, <i> and <b> (no links, images or scripts: the
report requests nothing from the network).

Seed paper: Shrivastava, Rameshan, Agnihotri, "Robust Representation Learning in Masked
Autoencoders" (seed 001); theory: Bisulco et al., "From Linearity to Non-Linearity: How Masked
Autoencoders Capture Spatial Correlations" (seed 002).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SectionText:
    """title (unique), reading (one plain-text line), definition_html (trusted HTML)."""

    title: str
    reading: str
    definition_html: str


REPORT_ORDER: tuple[str, ...] = (
    "tsne", "tsne-patches", "attention-distance", "attention-distance-photos", "subspaces",
    "separability", "cka", "blur", "occlusion", "imagenet-c", "alignment", "mask-invariance",
    "head-features", "theory",
)

# Sentences shared by several definitions.
_LAYERS = ("Layer <i>l</i> is <code>hidden[l]</code>, the token sequence after block <i>l</i> "
           "and <i>before</i> the final norm; layer 0 is the embedding output (patch embedding "
           "plus position, CLS prepended) before any block.")
_ATTN_LAYERS = "Attention layer <i>l</i> is block <i>l</i> (1 … L)."
_BOOTSTRAP = ("95 % intervals are percentile intervals of a Poisson bootstrap over images "
              "(1000 draws by default): image <i>i</i> gets weight w ~ Poisson(1) in each draw, "
              "keyed by (seed, image index), so sharding and image order do not change them.")
_ZBAR = ("z̄ = (1/N<sub>v</sub>) Σ<sub>i=1…N<sub>v</sub></sub> z<sub>i</sub> is the mean over "
         "the visible patch tokens (CLS excluded)")

SECTIONS: dict[str, SectionText] = {
    "tsne": SectionText(
        "Fig. 1 · t-SNE of the CLS and mean-patch embeddings per layer",
        "One point per image and layer, coloured by class, for the CLS token (a) and the mean "
        "patch token (b): look for the depth at which class clusters appear and how cleanly "
        "they separate (the paper reports layers 7-9 of ViT-B/16).",
        "<p>Seed paper §III-A2, §IV-A1, Fig. 1. For every image and layer, the CLS embedding "
        "z<sub>0</sub><sup>(l)</sup> ∈ ℝ<sup>D</sup> and the mean patch embedding "
        f"z̄<sup>(l)</sup>, where {_ZBAR}. {_LAYERS} The pass masks each image at the run's "
        "mask ratio (default 0.75, as the paper: N<sub>v</sub> = 49 of 196 patches for "
        "ViT-B/16), image <i>i</i>'s mask seeded by (seed, <i>i</i>). Images: the first 30 of "
        "each of the first 3 classes of the set by default (the paper: 90 images of 3 "
        "ImageNet classes).</p>"
        "<p>Each layer gets its own t-SNE (openTSNE, PCA initialisation, perplexity 30 lowered "
        "to (N − 1)/3 for few points, 250 early-exaggeration plus 500 iterations, one thread, "
        "random state from (seed, layer)), so panels are not aligned with each other. t-SNE "
        "axes have no unit: read neighbourhoods and cluster purity, not distances between "
        "clusters or cluster sizes. At layer 0 the CLS token is the same vector for every "
        "image; t-SNE is undefined there and the panel stays empty.</p>",
    ),
    "tsne-patches": SectionText(
        "Fig. 2 · t-SNE of individual patch tokens per layer",
        "Single visible patch tokens, coloured by their image's class, layer by layer: look "
        "for whether patches alone, not only the pooled embedding, group by class at depth.",
        "<p>Seed paper §IV-A1, Fig. 2: the patch tokens z<sub>i</sub><sup>(l)</sup> "
        f"(i ≥ 1) themselves. {_LAYERS} From every image, 16 of its visible patch tokens are "
        "drawn by a seeded permutation keyed by (seed, image index), the same tokens at every "
        "layer; the pool is then cut to a fixed total (2000 in <code>maelens run</code>), "
        "stratified by class with a seeded draw. The paper does not say how many tokens it "
        "plots.</p>"
        "<p>t-SNE settings as in Fig. 1, one map per layer. Tokens of one image are strongly "
        "correlated, so a tight group can be one image's patches rather than a class; the "
        "separability section's held-out scores split by image and are the quantitative "
        "check.</p>",
    ),
    "attention-distance": SectionText(
        "Fig. 3 · Mean attention distance per head, MAE vs supervised ViT",
        "How far each head looks, in input pixels, layer by layer: look for whether the MAE's "
        "heads mix local and global attention at every depth while the supervised ViT goes "
        "from local to global.",
        "<p>Seed paper §IV-A1, Fig. 3 (after Dosovitskiy et al. 2021). For head <i>h</i> of "
        "block <i>l</i> and a query patch <i>i</i>, d = Σ<sub>j</sub> p<sub>ij</sub> "
        "‖pos<sub>i</sub> − pos<sub>j</sub>‖, with pos the patch centres in <b>input "
        "pixels</b> taken from the model's own grid and patch size (grid distance × patch "
        "size), so models with other patch sizes share the axis; one dot is the mean over every "
        "(image, query patch) pair. Self-attention counts (distance 0). "
        f"{_ATTN_LAYERS}</p>"
        "<p>CLS policy (named on the figure): <code>exclude</code> (default) drops CLS as query "
        "and key and renormalises each patch row over the patch keys, p<sub>ij</sub> = "
        "A<sub>ij</sub> / Σ<sub>j′ ≠ CLS</sub> A<sub>ij′</sub>; <code>raw</code> drops the CLS "
        "column without renormalising (most public code), which scales d by "
        "1 − A<sub>i,CLS</sub>. The dashed line is what uniform attention over the visible "
        "patches would give. As in the paper, the images are not masked (the paper reports "
        "≈ 80-120 px for MAE ViT-B/16 at 224 px). The paper's supervised-ViT panel is copied "
        "from Dosovitskiy et al.; here the supervised ViT is measured with the same code on the "
        "same images.</p>",
    ),
    "attention-distance-photos": SectionText(
        "Fig. 3, second image set · Mean attention distance on other images",
        "The same per-head distances on a second, unrelated image set: look for whether the "
        "depth profile of each model stays the same when the images change.",
        "<p>The measurement of Fig. 3 (same definition, CLS policy and pixel units), repeated "
        "without masking on a second image set, as the paper repeats it on 100 images of the "
        "SAM data set. By default the second set is the 14 photographs shipped with "
        "scikit-image (<code>skimage.data</code>), resized and centre-cropped to the model's "
        "input size like ImageNet images; they carry no labels, which attention distance does "
        "not need. With so few images a head's value rests on 14 × N query rows: read the "
        "profile over layers, not single heads. " + _ATTN_LAYERS + "</p>",
    ),
    "subspaces": SectionText(
        "Fig. 4 · Principal angles θ₁ between class subspaces per layer",
        "The smallest principal angle between every pair of class subspaces, one box per "
        "layer: look for whether the boxes rise with depth and how far they sit from the "
        "random-subspace line.",
        "<p>Seed paper §III-A3, §IV-A2, Fig. 4. For class C at layer <i>l</i>, "
        "X<sub>C</sub><sup>(l)</sup> ∈ ℝ<sup>N<sub>c</sub>×D</sup> stacks the visible patch "
        "tokens of all the class's images; its top-<i>k</i> right singular vectors span the "
        "class subspace S<sub>C</sub>. maelens never stacks: it sums the Gram "
        "X<sub>C</sub><sup>⊤</sup>X<sub>C</sub> in float64 over batches and takes its top-"
        "<i>k</i> eigenvectors (eigenvalues = squared singular values). X<sub>C</sub> is "
        "<b>un-centred</b>, as the paper writes it (the subspace of the second moment, so the "
        "class mean is usually its first direction; a centred variant is an option, named on "
        "the figure). <i>k</i> = 10 by default (the paper gives no <i>k</i>); the same is done "
        f"with one CLS or mean-patch row per image. {_LAYERS}</p>"
        "<p>Principal angles (Knyazev &amp; Argentati) of orthonormal bases Q<sub>a</sub>, "
        "Q<sub>b</sub>: cosines are the singular values of Q<sub>a</sub><sup>⊤</sup>Q<sub>b</sub>,"
        " sines those of Q<sub>b</sub> − Q<sub>a</sub>Q<sub>a</sub><sup>⊤</sup>Q<sub>b</sub>; "
        "angles below 45° come from the sine, since arccos of a cosine near 1 loses half the "
        "digits. θ₁ is the smallest angle, in degrees; a box covers all C(C − 1)/2 class pairs "
        "(median, quartiles); the dotted line is the median θ₁ of random <i>k</i>-subspaces of "
        "ℝ<sup>D</sup>. A class whose <i>k</i>-th singular value is below 10<sup>−6</sup> of "
        "its first (e.g. CLS at layer 0) gives no angle (n/a).</p>"
        "<p>Spectra: the top-<i>k</i> singular values averaged over classes, and the variance "
        "explained Σ<sub>i≤k</sub> σ<sub>i</sub>² / Σ<sub>i</sub> σ<sub>i</sub>² (un-centred: a "
        "share of the second moment). Singular values grow with √N<sub>c</sub> and with the "
        "token norm, which itself grows with depth in pre-norm ViTs: compare layers of one run, "
        "not runs.</p>",
    ),
    "separability": SectionText(
        "Class separability per layer (beyond the paper)",
        "Held-out k-NN and linear-probe accuracy, silhouette and Fisher ratio per layer for "
        "CLS, mean-patch and patch tokens: look for the layer where each score rises and "
        "whether the models order the same way on every score.",
        "<p>Not in the paper: a quantitative check of Fig. 1-2. Images are split once, seeded "
        "and stratified by class, 75 % train / 25 % test, <b>by image</b>: every patch token of "
        "an image falls on one side (a token split would leak). k-NN accuracy: cosine "
        "similarity to the train rows, the <i>k</i> = 20 nearest each voting "
        "exp(cos / 0.07) for its class (DINO's monitor). Linear-probe accuracy: multinomial "
        "logistic regression (L-BFGS, C = 1) on features standardised with the train mean and "
        "standard deviation. Both are fractions in [0, 1] on the test rows.</p>"
        "<p>Silhouette: scikit-learn's mean silhouette coefficient with cosine distance, over "
        "train and test rows (a class-stratified subsample of at most 5000), in [−1, 1]. "
        "Fisher ratio: tr(S<sub>B</sub>) / tr(S<sub>W</sub>), S<sub>B</sub> = Σ<sub>c</sub> "
        "n<sub>c</sub>(μ<sub>c</sub> − μ)(μ<sub>c</sub> − μ)<sup>⊤</sup>, S<sub>W</sub> = "
        "Σ<sub>c</sub> Σ<sub>i∈c</sub> (x<sub>i</sub> − μ<sub>c</sub>)(x<sub>i</sub> − "
        "μ<sub>c</sub>)<sup>⊤</sup>; Euclidean and unbounded, so it depends on feature scale. "
        f"{_LAYERS} Same masked pass as Fig. 1-2.</p>",
    ),
    "cka": SectionText(
        "Linear CKA between layers and between models (beyond the paper)",
        "Similarity of the representations of every pair of layers, within each model and "
        "between the MAE and the supervised ViT: look for blocks of similar layers and for "
        "the depth at which the two models stop resembling each other.",
        "<p>Not in the paper. Linear centred kernel alignment (Kornblith et al. 2019) of "
        "n × D features X, Y of the same n images, column-centred X̃, Ỹ: CKA = "
        "‖X̃<sup>⊤</sup>Ỹ‖<sub>F</sub>² / (‖X̃<sup>⊤</sup>X̃‖<sub>F</sub> "
        "‖Ỹ<sup>⊤</sup>Ỹ‖<sub>F</sub>) ∈ [0, 1] (<i>biased</i>), streamed from float64 sums "
        "Σxy<sup>⊤</sup>, Σx, Σy. The <i>debiased</i> estimator replaces each HSIC by its "
        "unbiased U-statistic (Song et al. 2012) on the n × n Gram matrices (n ≥ 4); it removes "
        "the upward bias that makes biased CKA high for any high-dimensional features when n "
        "is small, so prefer it with few images.</p>"
        "<p>Samples: one mean-patch embedding per image (the kind is named on the figure). "
        "Between models the images are matched by data-set index and both see the same seeded "
        "masks. CKA is invariant to rotations and isotropic scaling, not to general linear "
        f"maps. {_LAYERS}</p>",
    ),
    "blur": SectionText(
        "Table I · Gaussian blur: top-1 accuracy, PSNR and SSIM per level",
        "Accuracy against image degradation for ten blur levels: look for how little top-1 "
        "falls while PSNR and SSIM fall, and whether the measured PSNR order agrees with the "
        "parameter order.",
        "<p>Seed paper §III-B1, §IV-B, Table I. The ten levels (kernel size <i>k</i>, σ), both "
        "in <b>pixels</b> of the model input: I (5, 1), II (5, 2), III (5, 4), IV (5, 9), "
        "V (7, 2), VI (7, 4), VII (7, 13.5), VIII (7, 15), IX (11, 2), X (11, 5). The kernel is "
        "torchvision's GaussianBlur: <i>k</i> taps at −(k − 1)/2 … (k − 1)/2 px, weights "
        "exp(−x²/2σ²) normalised to sum 1, applied separably to the [0, 1] RGB image before "
        "normalisation, with reflect padding (edge pixel not repeated). Top-1 (%): share of "
        "images whose argmax equals the label (over all logits unless the run restricts it to "
        "the evaluated classes). PSNR (dB) = 10 log<sub>10</sub>(1 / MSE) per image over all "
        "pixels and channels; SSIM as scikit-image's <code>structural_similarity</code> (7 × 7 "
        "uniform window, K₁ = 0.01, K₂ = 0.03, sample covariances, map cropped by 3 px, mean "
        "over channels), both against the clean image with data range 1 and averaged over "
        f"images. {_BOOTSTRAP}</p>"
        "<p>Truncation: the kernel ends at (k − 1)/2 px whatever σ is. With 7 taps, σ = 13.5 "
        "and 15 both give a near-box filter (edge/centre weight 0.976 and 0.980), so VII and "
        "VIII are nearly the same blur; IV is a near-box 5 × 5; IX (11, 2) has a small σ in a "
        "large kernel and blurs less than its place suggests (on natural 224-px photographs "
        "its PSNR falls between V and VI). The paper calls PSNR monotone in the level; "
        "maelens also ranks the levels by measured PSNR (PSNR rank). On small inputs "
        "(32 px) the same pixel levels blur a far larger share of the image than at 224 px.</p>",
    ),
    "occlusion": SectionText(
        "Fig. 5 · Attention-guided occlusion: accuracy vs share of patches removed",
        "Top-1 as the most-attended patches are removed, three ways, with a random-patch "
        "control: look for the share at which accuracy collapses and how far the rollout "
        "curves sit below the random control.",
        "<p>Seed paper §III-B1, §IV-B, Fig. 5. Attention rollout (Abnar &amp; Zuidema 2020) of "
        "the clean, unmasked pass: per block the heads are fused (mean by default; max, min), "
        "the identity is added for the residual path and each row is renormalised, "
        "A′<sub>l</sub> = (fuse(A<sub>l</sub>) + I) / rowsum; R = A′<sub>L</sub> ⋯ "
        "A′<sub>1</sub> in float64. Patches are scored by the CLS row R<sub>0,1:</sub> "
        "(default; the mean of the patch rows is the option closer to an average-pooled head) "
        "and ranked by decreasing score, ties to the lower patch index, so removed sets are "
        "nested. At p % the top round(N·p/100) patches go (halves up; N = 196: 10 % → 20, "
        "90 % → 176).</p>"
        "<p>Three curves: <b>pixel fill</b> (the patches' pixels set to black by default, or "
        "the normalisation mean colour, or seeded noise, before normalisation; the model "
        "still sees N tokens), <b>token dropping</b> (the encoder gets only the remaining "
        "tokens, as in MAE pre-training) and the <b>random control</b> (the same counts from a "
        "seeded per-image permutation, pixel fill). p = 0 is the clean pass. The paper states "
        f"neither the removal method nor the head fusion. Top-1 in %. {_BOOTSTRAP}</p>",
    ),
    "imagenet-c": SectionText(
        "Table II · ImageNet-C: top-1 accuracy per corruption and severity",
        "Top-1 for 15 corruptions at 5 severities, with mean per corruption and corruption "
        "errors: look for which corruption families cost the most accuracy and how fast each "
        "degrades with severity.",
        "<p>Seed paper §IV-B, Table II; Hendrycks &amp; Dietterich 2019. Noise (Gaussian, shot, "
        "impulse), blur (defocus, glass, motion, zoom), weather (snow, frost, fog, brightness), "
        "digital (contrast, elastic, pixelate, JPEG), severities 1-5. Unless an on-disk "
        "ImageNet-C tree is given, maelens corrupts the [0, 1] RGB model input itself with its "
        "own batched implementation of the published definitions and severity constants (those "
        "of the <code>imagecorruptions</code> 1.1.2 package, quirks kept), each image's draws "
        "keyed by (seed, corruption, severity, image index); the output is clamped and "
        "quantised to 8 bits, rounded to the nearest k/255 (the reference truncates: at most "
        "one level apart). Cells: top-1 (%); <i>mean</i>: over the five severities.</p>"
        "<p>With E the top-1 error, CE<sub>c</sub> = mean<sub>s</sub> E<sub>s,c</sub> / "
        "E<sup>AlexNet</sup><sub>c</sub> and relative CE<sub>c</sub> = (mean<sub>s</sub> "
        "E<sub>s,c</sub> − E<sub>clean</sub>) / (E<sup>AlexNet</sup><sub>c</sub> − "
        "E<sup>AlexNet</sup><sub>clean</sub>), with AlexNet's published errors (clean 43.5 %); "
        "mCE and relative mCE (%) average them over the corruptions with all five severities. "
        "They are comparable with published numbers only on ImageNet-C proper (the released "
        "files of the 1000-class validation set, all 15 × 5); elsewhere (other images, other "
        "resolutions, synthetic corruptions) read them as relative.</p>",
    ),
    "alignment": SectionText(
        "Table III · Directional alignment of clean and perturbed embeddings",
        "Mean cosine between each image's clean and perturbed embedding per perturbation "
        "level, split by whether the perturbed image is still classified correctly: look for "
        "how the cosine follows accuracy and how far apart the correct and wrong images are.",
        "<p>Seed paper §III-B2, Eq. 1, §IV-C, Table III. Per image, cos θ = ⟨z̄<sub>clean</sub>,"
        " z̄<sub>pert</sub>⟩ / (‖z̄<sub>clean</sub>‖₂ ‖z̄<sub>pert</sub>‖₂), where "
        f"{_ZBAR} of <code>hidden[L]</code>: the last block's output, <i>before</i> the final "
        "norm (<code>fc_norm</code> / <code>norm</code>) that the classifier reads (the pooled "
        "head input is an option). Computed in float64 and averaged over images, for all "
        "images and split by the <i>perturbed</i> pass's top-1 (correct / wrong, as in the "
        "paper's §IV-C). Norm diff. = mean |‖z̄<sub>pert</sub>‖ − ‖z̄<sub>clean</sub>‖| in embedding "
        "units (not comparable across models). Under token dropping z̄<sub>pert</sub> averages "
        "the remaining tokens; occlusion 0 % is the clean pass (cosine 1). The ΔC row is "
        f"defined under head features. {_BOOTSTRAP}</p>",
    ),
    "mask-invariance": SectionText(
        "Random-mask invariance of the embedding",
        "How much an image's embedding moves between random masks at one ratio: look for "
        "pairwise cosines near 1 and a norm range that is small next to the norm itself.",
        "<p>Seed paper §III-B2 (Directional Robustness, first paragraph). Each image is "
        "masked K times (default K = 100) at ratio m (default 0.75), the k-th mask of image "
        "<i>i</i> seeded by (seed, k, <i>i</i>) and keeping int(N(1 − m)) patches as the MAE "
        "code does. z<sub>k</sub>, the embedding of view k, is the mean of its visible patch "
        "tokens (CLS excluded) in <code>hidden[L]</code>, before the final norm; u<sub>k</sub> = "
        "z<sub>k</sub>/‖z<sub>k</sub>‖. Mean pairwise cosine = (‖Σ<sub>k</sub> "
        "u<sub>k</sub>‖² − K) / (K(K − 1)), exact and streamed; cosine to unmasked = "
        "mean<sub>k</sub> cos(z<sub>k</sub>, z<sub>0</sub>) with z<sub>0</sub> the unmasked "
        "embedding (an addition to the paper). Norm range = max<sub>k</sub> ‖z<sub>k</sub>‖ − "
        "min<sub>k</sub> ‖z<sub>k</sub>‖ in embedding units (the paper quotes 92.4 to 95.4 for "
        "one image), also divided by ‖z<sub>0</sub>‖. Per-image values are averaged over "
        f"images. {_BOOTSTRAP}</p>",
    ),
    "head-features": SectionText(
        "Fig. 6-8 · Common active features per attention head, clean vs perturbed",
        "Per layer and head, how many of the features a class consistently activates survive "
        "each perturbation level, and the mean drop ΔC: look for the layers and levels where "
        "the counts fall away from the clean column.",
        "<p>Seed paper §III-B2, Eq. 2-3, §IV-C, Fig. 6-8. The head output O<sup>(l,h)</sup> = "
        "A<sup>(l,h)</sup>V<sup>(l,h)</sup> (T × d<sub>h</sub>, the input of the output "
        "projection) as the model computes it: A spans all T tokens, CLS key included, where "
        "the paper writes A over the N<sub>v</sub> visible patches. Per image O is averaged "
        "over its visible patch rows (CLS row excluded; the paper says \"all rows\"), one "
        "d<sub>h</sub>-vector per (l, h); its active features are the top <i>k</i> = 10 "
        "coordinates by magnitude |value|, ties to the lower index. Feature f is common in "
        "class c when it is active in ≥ 60 % of the class's images (e.g. 30 of 50). "
        f"{_ATTN_LAYERS}</p>"
        "<p>C<sub>clean</sub> = number of common features on clean images (first heat-map "
        "column); C<sub>pert</sub> = |common<sub>clean</sub> ∩ common<sub>pert</sub>|, the "
        "paper's intersection count; both in features (0 … k), each cell averaged over the "
        "classes. Fig. 8: ΔC = mean of C<sub>clean</sub> − C<sub>pert</sub> over layers, heads "
        "and classes (the paper averages layers and heads; the class average is maelens') per "
        "perturbation level; ΔC = 0 at the clean pass.</p>",
    ),
    "theory": SectionText(
        "Linear-MAE theory · predicted spatial scale for these images",
        "What a linear MAE trained on these images' pixel covariance would reconstruct from, "
        "in pixels, against the data's own correlation length: look for whether the model's "
        "mask ratio and patch size put the predicted spread near the correlation length.",
        "<p>Seed 002 (Bisulco et al., ICCV 2025) derives the features of a <i>linear</i> MAE; "
        "maelens uses a closed form that agrees with public summaries of its Theorem 1 (the "
        "paper body was not available) and was checked against gradient descent on the exact "
        "loss. Σ is the covariance of the grey images, downsampled to a side of about 32 "
        "theory pixels with a whole number of them per model patch, with a ridge of "
        "10<sup>−2</sup> × mean variance so Q ≻ 0. With p × p patches, D = Σ restricted to "
        "same-patch pixel pairs, and q₁ = K/N, q₂ = K(K − 1)/(N(N − 1)) the chances that one "
        "patch, or two distinct patches, stay visible when K = int(N(1 − m)) of N are kept "
        "(the MAE code's count): Q = q₂Σ + (q₁ − q₂)D and the full-rank all-pixel optimum "
        "W* = q₁Q<sup>−1</sup>Σ, W*<sub>ij</sub> = weight of input pixel i in the "
        "reconstruction of pixel j.</p>"
        "<p>Predicted spread = mean over output pixels j of Σ<sub>i</sub> |W*<sub>ij</sub>| "
        "‖x<sub>i</sub> − x<sub>j</sub>‖ / Σ<sub>i</sub> |W*<sub>ij</sub>|, converted to model "
        "input pixels (0 for a plain autoencoder, m = 0), over a grid of m and p, and quoted "
        "at m = 0.75 and the model's patch size. Correlation length: the distance (px) at "
        "which the mean pixel correlation falls to 1/e. A second-order, linear prediction: "
        "the paper's point is that nonlinear MAEs also use higher-order structure, so read it "
        "as a guide to (m, p), not a measurement of the model.</p>",
    ),
}
