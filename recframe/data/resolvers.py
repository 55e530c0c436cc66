"""Config resolvers that read data files: sizes and feature names from what preprocessing wrote.

``${feature_map:DIR,key}`` is a value of DIR's ``feature_map.json`` (``recframe preprocess``
writes it: ``num_embeddings.C1`` sizes a table from the data); ``${feature_spec:FILE,key}`` the
``dense`` / ``sparse`` feature names or the ``tables`` of a feature spec (``recframe.data.spec``).
They belong to data/ because they read its files; the application registers them before it
composes a run config (``recframe.training.checks``), so config/ itself reads no files.

Example:
    >>> from omegaconf import OmegaConf
    >>> register_resolvers()
    >>> OmegaConf.has_resolver("feature_map"), OmegaConf.has_resolver("feature_spec")
    (True, True)
"""

from __future__ import annotations

from omegaconf import OmegaConf

from recframe.data.binary import feature_map_value
from recframe.data.spec import feature_spec_value


def register_resolvers() -> None:
    """Register ``${feature_map:DIR,key}`` and ``${feature_spec:FILE,key}`` with OmegaConf (once per process)."""
    if not OmegaConf.has_resolver("feature_map"):
        OmegaConf.register_new_resolver("feature_map", feature_map_value)
    if not OmegaConf.has_resolver("feature_spec"):
        OmegaConf.register_new_resolver("feature_spec", feature_spec_value)
