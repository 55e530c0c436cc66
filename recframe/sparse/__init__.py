"""Sparse batch types: JaggedTensor, KeyedJaggedTensor, KeyedTensor and Batch.

They use the vocabulary of TorchRec (written from scratch), so code moves over easily.
"""

from recframe.sparse.batch import Batch
from recframe.sparse.jagged import JaggedTensor
from recframe.sparse.keyed_jagged import KeyedJaggedTensor
from recframe.sparse.keyed_tensor import KeyedTensor

__all__ = ["Batch", "JaggedTensor", "KeyedJaggedTensor", "KeyedTensor"]
