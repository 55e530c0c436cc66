"""recframe's one checkpoint format: torch.distributed.checkpoint (DCP) tensors + JSON, in atomic folders.

Used by every run, one process or many (``plugin.DistributedCheckpointIO`` is the Lightning plugin).
A checkpoint folder (``checkpoints/step-N``, see ``folder``) holds:

- DCP files: every tensor of Lightning's checkpoint dict, keyed by its path in that dict.
  Embedding tables and their fused optimizer states are keyed by table name
  (``recframe.training.checkpoint.layout``) and saved as blocks with global offsets, so a
  checkpoint of any world size and sharding plan loads into any other (resharding). Dense
  weights, the dense optimizer state and the sparse ``step`` counters are the same on every rank
  and DCP writes them once. Each rank's RNG states are tensors under ``rank<r>/`` (``rng``).
- ``state.json``: the rest of Lightning's dict (global step, epoch, loop counters, LR schedulers,
  optimizer hyperparameters, the data position, callback states, the run config) as JSON, with
  ``{"__tensor__": key}`` where a tensor was (``tree``). Anything that is neither JSON nor a
  tensor is an error when saving, so a checkpoint never holds a pickled object.
- ``manifest.json``: written last, lists every file with its size (``folder``).

The modules, one idea each:

- ``tree``: the JSON part (tensors replaced by references).
- ``rng``: a process's random number generator states as tensors.
- ``ranks``: the collectives every rank agrees through (they work without a process group too).
- ``blocks``: a rank's table block as a ``ShardedTensor``.
- ``writer`` / ``reader``: ``save`` and ``load`` of a checkpoint folder (collective).
- ``plugin``: ``DistributedCheckpointIO``, Lightning's checkpoint I/O through them.
- ``folder``: atomic commits, the manifest, ``last``, pruning.
- ``safety``: reading DCP files without running code from them.
- ``callback``: when checkpoints are written (every N steps, at the end, on SIGTERM).

Example:
    >>> import tempfile, pathlib, torch
    >>> from recframe.training.checkpoint.reader import load
    >>> from recframe.training.checkpoint.writer import save
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> folder = save({"state_dict": {"w": torch.ones(2)}, "global_step": 3}, root, 3, layout=None, keep_last=1)
    >>> checkpoint, _ = load(folder, layout=None)
    >>> checkpoint["global_step"], checkpoint["state_dict"]["w"].tolist()
    (3, [1.0, 1.0])
"""
