"""Synthetic Criteo batches made with torch on the training device (no DataLoader workers needed).

``DeviceSynthesizer`` draws the same distributions as ``SyntheticCriteo.batch`` (lognormal dense
features, Zipf ids, fixed or variable bag sizes, empty bags) with torch's random generator on the
device, and labels them with the very same hidden model: the per-id weights come from the same
splitmix64 hash of ``(salt, id)``, computed here in int64 arithmetic, so ``SyntheticCriteo.hidden_logits``
of a batch made here agrees with the logits used to draw its labels (to float32 rounding).

Batch ``i`` depends only on ``(seed, i, batch size)`` and the device type: the generator is reseeded
per batch, so resumed and multi-rank runs see the same batches as an uninterrupted one. The numbers
differ from the host generator's (torch's Philox on CUDA, not numpy's PCG64): a GPU run and a CPU
run of the same config train on different, equally distributed, samples.

Nothing here reads tensor data on the host when bags have fixed sizes (the benchmark shapes and
MLPerf's multi-hot layout): the work is a few dozen kernel launches per batch. With variable bag
sizes or empty bags, compacting the ids costs one device-to-host synchronization per batch.

Example:
    >>> from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
    >>> gen = SyntheticCriteo(SyntheticConfig(table_sizes=(100,) * 3, ids_per_feature=(1, 2, 3)), seed=0)
    >>> batch = DeviceSynthesizer(gen, device="cpu").batch(index=0, batch_size=4)
    >>> batch.sparse_features.length_per_key(), tuple(batch.labels.shape)
    ([4, 8, 12], (4,))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recframe.data.synthetic import SyntheticCriteo
from recframe.sparse import Batch, KeyedJaggedTensor


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors: the same bits as ``recframe.data.synthetic._mix64`` on uint64.

    Args:
        x: int64 tensor (uint64 bit patterns); additions and products wrap around as in uint64.
    """
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def hash_uniforms(ids: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
    """Four uniforms in [-sqrt(3), sqrt(3)) per id, bit for bit those of ``synthetic._hash_uniforms``.

    Args:
        ids: int64 ids ``[N]``.
        salt: int64 salt per id ``[N]`` (or one, broadcast).

    Returns:
        float32 ``[N, 4]``.
    """
    h = mix64(ids ^ salt)
    parts = torch.stack([(h >> (16 * j)) & 0xFFFF for j in range(4)], dim=-1).to(torch.float32)
    return parts * np.float32(2.0 * math.sqrt(3.0) / 65536.0).item() - np.float32(math.sqrt(3.0)).item()


def batch_seed(seed: int, index: int, batch_size: int) -> int:
    """The torch seed of batch ``index``: a hash of ``(seed, index, batch_size)`` (63 bits)."""
    state = np.random.SeedSequence([seed, 3, index, batch_size]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


@dataclass
class _Layout:
    """Per-id constants of one batch size, kept on the device: table sizes, Zipf factors, salts, positions."""

    rows: torch.Tensor  # [N] rows of the table of each id slot (int64)
    zipf_scale: torch.Tensor  # [N] (rows + 1) ** (1 - s) - 1, or log(rows + 1) for s = 1 (float)
    salts: torch.Tensor  # [T, N] salt of each id slot's (task, feature)
    position: torch.Tensor  # [N] position of the slot in its bag
    bag_size: torch.Tensor  # [F * B] the full bag size of each bag (int64)
    bag_of_feature: torch.Tensor  # [F, 1] the full bag size of each feature (int64)


class DeviceSynthesizer:
    """Makes ``SyntheticCriteo`` batches with torch on ``device`` (see the module docstring).

    Args:
        generator: the host generator whose config, seed and hidden model are used.
        device: where batches are made (``"cuda"``, ``"cpu"``, a ``torch.device``).

    Example:
        >>> from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
        >>> maker = DeviceSynthesizer(SyntheticCriteo(SyntheticConfig(table_sizes=(10, 20)), seed=1), "cpu")
        >>> maker.batch(index=5, batch_size=3).dense_features.shape
        torch.Size([3, 13])
    """

    def __init__(self, generator: SyntheticCriteo, device: torch.device | str) -> None:
        self.generator = generator
        self.config = generator.config
        self.device = torch.device(device)
        c, g = self.config, generator
        dev = self.device
        self._float = torch.float32 if g._uniform_dtype == np.float32 else torch.float64
        self._table_sizes = torch.as_tensor(g._table_sizes, dtype=torch.int64)
        self._bags = g._bag_sizes.astype(np.int64)
        self._fixed = not c.variable_lengths and c.empty_bag_probability == 0.0
        self._dense_mu = torch.as_tensor(g._dense_mu, dtype=torch.float32, device=dev)
        self._dense_sigma = torch.as_tensor(g._dense_sigma, dtype=torch.float32, device=dev)
        self._beta = torch.as_tensor(g._beta, dtype=torch.float32, device=dev)  # [T, n_dense]
        self._salts = torch.as_tensor(g._salts.astype(np.int64), device=dev)  # [T, F]
        self._layouts: dict[int, _Layout] = {}
        self._rng = torch.Generator(device=dev)

    def _layout(self, batch_size: int) -> _Layout:
        """The per-id constants of a batch size (built once per size)."""
        layout = self._layouts.get(batch_size)
        if layout is not None:
            return layout
        c, dev = self.config, self.device
        bags = torch.as_tensor(self._bags)
        per_feature = bags * batch_size  # id slots of each feature (full bags)
        feature = torch.repeat_interleave(torch.arange(len(bags)), per_feature)
        rows = self._table_sizes[feature]
        m = (rows + 1).to(torch.float64)
        s = c.zipf_exponent
        scale = torch.log(m) if abs(s - 1.0) < 1e-9 else m ** (1.0 - s) - 1.0
        position = torch.cat([torch.arange(int(n)).repeat(batch_size) for n in self._bags]) if len(bags) \
            else torch.zeros(0, dtype=torch.int64)
        layout = _Layout(
            rows=rows.to(dev), zipf_scale=scale.to(self._float).to(dev),
            salts=self._salts[:, feature.to(dev)], position=position.to(dev),
            bag_size=bags.repeat_interleave(batch_size).to(dev), bag_of_feature=bags[:, None].to(dev),
        )
        self._layouts[batch_size] = layout
        return layout

    def _zipf(self, u: torch.Tensor, layout: _Layout) -> torch.Tensor:
        """``synthetic.zipf_ids`` on the device: uniforms in [0, 1) to ids of each slot's table."""
        s = self.config.zipf_exponent
        if abs(s - 1.0) < 1e-9:
            x = torch.exp(u * layout.zipf_scale)
        else:
            x = (1.0 + u * layout.zipf_scale) ** (1.0 / (1.0 - s))
        return torch.minimum(x.to(torch.int64) - 1, layout.rows - 1).clamp_(min=0)

    def _logits(self, z: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor, layout: _Layout,
                batch_size: int) -> torch.Tensor:
        """The hidden model's logits ``[B, T]`` (``SyntheticCriteo._logits`` on full-bag id slots).

        Args:
            z: standard normals behind the dense features ``[B, n_dense]``.
            ids: ids of every full-bag slot ``[N]`` (slots past a bag's length are masked out).
            lengths: bag sizes ``[F * B]``.
            layout: the batch size's constants.
            batch_size: B.
        """
        c = self.config
        num_f = c.num_sparse_features
        out = torch.empty((batch_size, c.num_tasks), dtype=torch.float32, device=self.device)
        keep = None if self._fixed else (layout.position < torch.repeat_interleave(
            lengths, layout.bag_size, output_size=ids.numel()))[:, None].to(torch.float32)
        denom = lengths.clamp(min=1).to(torch.float32)[:, None]
        for t in range(c.num_tasks):
            u = hash_uniforms(ids, layout.salts[t])
            if keep is not None:
                u = u * keep
            if num_f:
                sums = torch.segment_reduce(u, "sum", lengths=layout.bag_size, axis=0, unsafe=True)
                means = (sums / denom).view(num_f, batch_size, 4)
            else:
                means = torch.zeros((0, batch_size, 4), device=self.device)
            total, squares = means.sum(dim=0), (means * means).sum(dim=0)
            first = total[:, 0] / math.sqrt(max(num_f, 1))
            pairs = 0.5 * ((total[:, 1:] * total[:, 1:]).sum(-1) - squares[:, 1:].sum(-1))
            pairs = pairs / math.sqrt(max(3 * num_f * (num_f - 1) / 2, 1))
            dense = z @ self._beta[t] / math.sqrt(max(c.num_dense_features, 1))
            out[:, t] = c.dense_weight * dense + c.sparse_weight * first + c.pairwise_weight * pairs
        if c.num_tasks > 1:
            rho = c.task_correlation
            out[:, 1:] = math.sqrt(rho) * out[:, :1] + math.sqrt(1.0 - rho) * out[:, 1:]
        return c.base_logit + c.signal_strength * out

    def batch(self, index: int, batch_size: int) -> Batch:
        """Batch number ``index`` on the device (a pure function of seed, index, batch size and device type).

        Args:
            index: the batch number (any int >= 0).
            batch_size: samples in the batch.
        """
        return self.batch_and_logits(index, batch_size)[0]

    @torch.no_grad()
    def batch_and_logits(self, index: int, batch_size: int) -> tuple[Batch, torch.Tensor]:
        """Batch number ``index`` and the hidden logits ``[B, T]`` its labels were drawn from.

        Args:
            index: the batch number (any int >= 0).
            batch_size: samples in the batch.
        """
        c, dev = self.config, self.device
        layout = self._layout(batch_size)
        rng = self._rng.manual_seed(batch_seed(self.generator.seed, index, batch_size))
        num_f = c.num_sparse_features
        z = torch.randn((batch_size, c.num_dense_features), generator=rng, device=dev)
        raw = torch.exp(z * self._dense_sigma + self._dense_mu)
        dense = torch.log1p(raw) if c.dense_log1p else raw
        u = torch.rand(layout.rows.shape, generator=rng, device=dev, dtype=self._float)
        ids = self._zipf(u, layout)
        if c.variable_lengths:
            draw = torch.rand((num_f, batch_size), generator=rng, device=dev)
            lengths = (draw * layout.bag_of_feature).to(torch.int64) + 1
        else:
            lengths = layout.bag_of_feature.expand(num_f, batch_size).clone()
        if c.empty_bag_probability > 0.0:
            empty = torch.rand((num_f, batch_size), generator=rng, device=dev) < c.empty_bag_probability
            lengths = lengths.masked_fill(empty, 0)
        lengths = lengths.reshape(-1)
        logits = self._logits(z, ids, lengths, layout, batch_size)
        labels = (torch.rand(logits.shape, generator=rng, device=dev) < torch.sigmoid(logits)).to(torch.float32)
        if self._fixed:
            values, per_key = ids, [int(n) * batch_size for n in self._bags]
        else:  # compacting variable bags: one host sync for the number of ids
            slot_length = torch.repeat_interleave(lengths, layout.bag_size, output_size=ids.numel())
            values, per_key = ids[layout.position < slot_length], None
        kjt = KeyedJaggedTensor(self.generator.feature_names, values, lengths=lengths, stride=batch_size,
                                validate=False, length_per_key=per_key)
        labels = labels.squeeze(1) if c.num_tasks == 1 else labels
        return Batch(dense_features=dense, sparse_features=kjt, labels=labels), logits
