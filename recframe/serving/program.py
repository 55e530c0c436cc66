"""``ServingModel``: a trained CTR model as a function of three plain tensors, ready for ``torch.export``.

Inputs (the documented interface of every exported program):

- ``dense``: ``[batch, num_dense]`` float32, the dense features in the config's order (after the
  data source's transform, e.g. log1p); ``[batch, 0]`` for a model without dense features.
- ``values``: ``[num_ids]`` int64, every id of every sparse feature, feature-major: all ids of
  feature 0 (sample 0's, then sample 1's, ...), then feature 1's, and so on. These are the ids as
  recframe's data source hands them to the model: after its ``data.id_mapping`` (a vocabulary, or
  the hash of a string column), which the program does not hold; ``recframe predict`` reads raw
  files through the run's data source. A table with ``id_policy=modulo`` hashes them again, as in
  training.
- ``lengths``: ``[num_sparse, batch]`` int64, the number of ids of each feature in each sample.

Output: ``[batch]`` click probabilities (``[batch, tasks]`` for several tasks), the sigmoid of
the model's logits. The feature order is ``ServingModel.sparse_keys`` / the export's metadata.

Every ``EmbeddingBagCollection`` inside the model is replaced by an ``InferenceEmbeddingBags``
(plain torch lookups, tables fp32 or quantized); the model's dense parts are used as trained.

Example:
    >>> import torch
    >>> from recframe.config.compose import compose_config
    >>> from recframe.training.builders import build_model
    >>> cfg = compose_config(["+experiment=dlrm", "tables.num_embeddings=100", "run_dir=unused"])
    >>> serving = ServingModel(build_model(cfg).eval(), list(cfg.features.sparse), "int8")
    >>> lengths = torch.ones(26, 3, dtype=torch.int64)
    >>> serving(torch.rand(3, 13), torch.arange(78), lengths).shape
    torch.Size([3])
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from recframe.embedding import EmbeddingBagCollection
from recframe.serving.embeddings import InferenceEmbeddingBags
from recframe.sparse import Batch, KeyedJaggedTensor
from recframe.vocab import Quantize


class ServingModel(nn.Module):
    """``(dense, values, lengths) -> probabilities`` around a copy of a trained model (eval mode).

    Args:
        model: the trained model (unsharded; not changed).
        sparse_keys: the sparse features in the order of ``lengths``' rows (the config's ``features.sparse``).
        quantize: how the tables are stored (``none``, ``fp16``, ``int8``, ``int4``).
    """

    def __init__(self, model: nn.Module, sparse_keys: Sequence[str], quantize: Quantize | str = Quantize.none) -> None:
        super().__init__()
        self.sparse_keys = list(sparse_keys)
        self.quantize = Quantize(quantize)
        self.model = copy.deepcopy(model).eval()
        self.table_bytes = 0
        replaced = 0
        for parent in list(self.model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, EmbeddingBagCollection):
                    lookup = InferenceEmbeddingBags.from_collection(child, self.quantize, self.sparse_keys)
                    setattr(parent, name, lookup)
                    self.table_bytes += lookup.num_bytes
                    replaced += 1
        left = [type(m).__name__ for m in self.model.modules() if "Collection" in type(m).__name__
                and not isinstance(m, InferenceEmbeddingBags)]
        if left or not replaced:
            raise ValueError(f"{type(model).__name__}: only models whose tables are pooled EmbeddingBagCollections "
                             f"can be exported for serving (found {left or 'no embedding collection'})")

    def forward(self, dense: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[batch]`` (or ``[batch, tasks]``) of the samples (inputs: the module docstring)."""
        batch = dense.shape[0]
        kjt = KeyedJaggedTensor(self.sparse_keys, values, lengths=lengths.reshape(-1), stride=batch, validate=False)
        return torch.sigmoid(self.model(Batch(dense, kjt, dense.new_zeros(batch))))


def example_inputs(num_dense: int, num_sparse: int, batch: int = 4, ids_per_bag: int = 2
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of the documented shapes (for tracing): ``ids_per_bag`` ids of value ``0..`` in every bag."""
    lengths = torch.full((num_sparse, batch), ids_per_bag, dtype=torch.int64)
    return torch.rand(batch, num_dense), torch.arange(num_sparse * batch * ids_per_bag), lengths
