"""recframe: configuration-driven training of recommendation models.

Heavy modules (Lightning, fbgemm_gpu, Hydra) are imported lazily by the subpackages that need them.
"""

__version__ = "0.1.0"
