"""The data layer: image files, arrays, class folders, the MNIST demo set, preprocessing.

Everything decodes to uint8 RGB (H, W, 3) first; `Preprocess` alone turns images into model
inputs (N, 3, S, S) float32.
"""

from maelens.data.arrays import load_array_images
from maelens.data.class_names import read_class_names
from maelens.data.folders import ImageFolderDataset
from maelens.data.images import (
    IMAGE_EXTENSIONS,
    LoadedImages,
    image_to_rgb,
    load_image_folder,
    read_image,
    scan_images,
)
from maelens.data.labeled import LabeledImages
from maelens.data.mnist import (
    MNIST_MEAN,
    MNIST_STD,
    mnist_demo,
    mnist_preprocess,
    mnist_tensors,
    split_indices,
)
from maelens.data.preprocess import Preprocess, denormalize

__all__ = [
    "IMAGE_EXTENSIONS",
    "MNIST_MEAN",
    "MNIST_STD",
    "ImageFolderDataset",
    "LabeledImages",
    "LoadedImages",
    "Preprocess",
    "denormalize",
    "image_to_rgb",
    "load_array_images",
    "load_image_folder",
    "mnist_demo",
    "mnist_preprocess",
    "mnist_tensors",
    "read_class_names",
    "read_image",
    "scan_images",
    "split_indices",
]
