"""Dataset pipeline: readers and featurisation (prepare), TensorStore storage, Grain loader.

Importing this package does not import pymatgen (featurize.py and readers.py do,
and are loaded only by prepare workers).
"""

from xxact_jax.data.dataset import ConcatDataset
from xxact_jax.data.dataset import Dataset
from xxact_jax.data.dataset import open_dataset
from xxact_jax.data.embedded import default_dataset_path
from xxact_jax.data.loader import make_loader

__all__ = ["ConcatDataset", "Dataset", "open_dataset", "make_loader", "default_dataset_path"]
