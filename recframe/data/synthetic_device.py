"""Synthetic Criteo batches made with torch on the training device (no DataLoader workers needed).

``DeviceSynthesizer`` draws the same distributions as ``SyntheticCriteo.batch`` (lognormal dense
features, Zipf ids, fixed or variable bag sizes, empty bags) with torch's random generator on the
device, and labels them with the very same hidden model: the per-id weights come from the same
splitmix64 hash of ``(salt, id)``, computed here in int64 arithmetic, so ``SyntheticCriteo.hidden_logits``
of a batch made here agrees with the logits used to draw its labels (to float32 rounding).

Batch ``i`` depends only on ``(seed, i, batch size)`` and the device type: consecutive batches are made
``K`` at a time (one set of launches for ``K`` batches), from a generator reseeded per chunk, so
resumed and multi-rank runs see the same batches as an uninterrupted one (a rank of ``W`` makes
whole chunks and uses its ``1/W`` share of them: cheap GPU work, for fewer host launches). The numbers
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
    """splitmix64's finalizer on int64 tensors: the same bits as ``recframe.data.synthetic_hash.mix64`` on uint64.

    Args:
        x: int64 tensor (uint64 bit patterns); additions and products wrap around as in uint64.
    """
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def hash_uniforms(ids: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
    """Four uniforms in [-sqrt(3), sqrt(3)) per id, bit for bit those of ``synthetic_hash.hash_uniforms``.

    Args:
        ids: int64 ids ``[N]``.
        salt: int64 salt per id ``[N]`` (or one, broadcast).

    Returns:
        float32 ``[N, 4]``.
    """
    h = mix64(ids ^ salt)
    parts = torch.stack([(h >> (16 * j)) & 0xFFFF for j in range(4)], dim=-1).to(torch.float32)
    return parts * np.float32(2.0 * math.sqrt(3.0) / 65536.0).item() - np.float32(math.sqrt(3.0)).item()


def batch_seed(seed: int, chunk: int, batch_size: int, chunk_size: int) -> int:
    """The torch seed of chunk ``chunk``: a hash of ``(seed, chunk, batch_size, chunk_size)`` (63 bits)."""
    state = np.random.SeedSequence([seed, 3, chunk, batch_size, chunk_size]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


# Batches are made in chunks of consecutive indices (one set of launches for several batches: the
# host's work per batch shrinks K times): at most MAX_CHUNK batches, at most CHUNK_IDS id slots.
MAX_CHUNK = 8
CHUNK_IDS = 4_000_000


@dataclass
class _Layout:
    """Per-id constants of one batch size, kept on the device: table sizes, Zipf factors, salts, positions."""

    chunk: int  # batches made together (K)
    rows: torch.Tensor  # [N] rows of the table of each id slot of a batch (int64)
    zipf_scale: torch.Tensor  # [N] (rows + 1) ** (1 - s) - 1, or log(rows + 1) for s = 1 (float)
    salts: torch.Tensor  # [T, N] salt of each id slot's (task, feature)
    position: torch.Tensor  # [N] position of the slot in its bag
    chunk_bag_size: torch.Tensor  # [K * F * B] the full bag size of each bag of a chunk (int64)
    bag_of_feature: torch.Tensor  # [F, 1] the full bag size of each feature (int64)


@dataclass
class _Chunk:
    """K consecutive batches (index ``first`` on): every tensor has a leading ``[K]`` dimension."""

    first: int
    dense: torch.Tensor  # [K, B, n_dense]
    ids: torch.Tensor  # [K, N] ids of every full-bag slot
    lengths: torch.Tensor  # [K, F * B]
    labels: torch.Tensor  # [K, B, T]
    logits: torch.Tensor  # [K, B, T]


class DeviceSynthesizer:
    """Makes ``SyntheticCriteo`` batches with torch on ``device`` (see the module docstring).

    Consecutive batch indices are made together, ``K`` at a time (``chunk_size``; 8 for the one-hot
    benchmark shapes, 2 at MLPerf's 214 ids/sample): batch ``i`` is part ``i % K`` of chunk ``i // K``,
    which is drawn from a generator seeded by ``(seed, i // K, batch size, K)``. The two chunks last
    used are kept, so a training stream and a validation stream can alternate.

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
        self._chunks: dict[tuple[int, int], _Chunk] = {}  # (chunk number, batch size) -> the two last used
        self._rng = torch.Generator(device=dev)

    def chunk_size(self, batch_size: int) -> int:
        """How many consecutive batches of this size are made together."""
        slots = int(self._bags.sum()) * batch_size
        return max(1, min(MAX_CHUNK, CHUNK_IDS // max(slots, 1)))

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
        chunk = self.chunk_size(batch_size)
        layout = _Layout(
            chunk=chunk, rows=rows.to(dev), zipf_scale=scale.to(self._float).to(dev),
            salts=self._salts[:, feature.to(dev)], position=position.to(dev),
            chunk_bag_size=bags.repeat_interleave(batch_size).repeat(chunk).to(dev),
            bag_of_feature=bags[:, None].to(dev),
        )
        self._layouts[batch_size] = layout
        return layout

    def _zipf(self, u: torch.Tensor, layout: _Layout) -> torch.Tensor:
        """``synthetic_hash.zipf_ids`` on the device: uniforms in [0, 1) (``[..., N]``) to ids of each slot's table."""
        s = self.config.zipf_exponent
        if abs(s - 1.0) < 1e-9:
            x = torch.exp(u * layout.zipf_scale)
        else:
            x = (1.0 + u * layout.zipf_scale) ** (1.0 / (1.0 - s))
        return torch.minimum(x.to(torch.int64) - 1, layout.rows - 1).clamp_(min=0)

    def _logits(self, z: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor, layout: _Layout,
                batch_size: int) -> torch.Tensor:
        """The hidden model's logits ``[K, B, T]`` (``SyntheticCriteo._logits`` on full-bag id slots).

        Args:
            z: standard normals behind the dense features ``[K, B, n_dense]``.
            ids: ids of every full-bag slot ``[K, N]`` (slots past a bag's length are masked out).
            lengths: bag sizes ``[K, F * B]``.
            layout: the batch size's constants.
            batch_size: B.
        """
        c = self.config
        num_f, chunk = c.num_sparse_features, layout.chunk
        out = torch.empty((chunk, batch_size, c.num_tasks), dtype=torch.float32, device=self.device)
        keep = None
        if not self._fixed:
            slot_length = torch.repeat_interleave(lengths.reshape(-1), layout.chunk_bag_size, output_size=ids.numel())
            keep = (layout.position < slot_length.view(chunk, -1)).reshape(-1, 1).to(torch.float32)
        denom = lengths.reshape(-1, 1).clamp(min=1).to(torch.float32)
        for t in range(c.num_tasks):
            u = hash_uniforms(ids.reshape(-1), layout.salts[t].repeat(chunk))
            if keep is not None:
                u = u * keep
            if num_f:
                sums = torch.segment_reduce(u, "sum", lengths=layout.chunk_bag_size, axis=0, unsafe=True)
                means = (sums / denom).view(chunk, num_f, batch_size, 4)
            else:
                means = torch.zeros((chunk, 0, batch_size, 4), device=self.device)
            total, squares = means.sum(dim=1), (means * means).sum(dim=1)  # [K, B, 4]
            first = total[..., 0] / math.sqrt(max(num_f, 1))
            pairs = 0.5 * ((total[..., 1:] * total[..., 1:]).sum(-1) - squares[..., 1:].sum(-1))
            pairs = pairs / math.sqrt(max(3 * num_f * (num_f - 1) / 2, 1))
            dense = z @ self._beta[t] / math.sqrt(max(c.num_dense_features, 1))
            out[..., t] = c.dense_weight * dense + c.sparse_weight * first + c.pairwise_weight * pairs
        if c.num_tasks > 1:
            rho = c.task_correlation
            out[..., 1:] = math.sqrt(rho) * out[..., :1] + math.sqrt(1.0 - rho) * out[..., 1:]
        return c.base_logit + c.signal_strength * out

    @torch.no_grad()
    def _make_chunk(self, number: int, batch_size: int) -> _Chunk:
        """Chunk ``number``: batches ``number * K`` to ``number * K + K - 1``, made together."""
        c, dev = self.config, self.device
        layout = self._layout(batch_size)
        chunk, num_f = layout.chunk, c.num_sparse_features
        rng = self._rng.manual_seed(batch_seed(self.generator.seed, number, batch_size, chunk))
        z = torch.randn((chunk, batch_size, c.num_dense_features), generator=rng, device=dev)
        raw = torch.exp(z * self._dense_sigma + self._dense_mu)
        dense = torch.log1p(raw) if c.dense_log1p else raw
        u = torch.rand((chunk, layout.rows.numel()), generator=rng, device=dev, dtype=self._float)
        ids = self._zipf(u, layout)
        if c.variable_lengths:
            draw = torch.rand((chunk, num_f, batch_size), generator=rng, device=dev)
            lengths = (draw * layout.bag_of_feature).to(torch.int64) + 1
        else:
            lengths = layout.bag_of_feature.expand(chunk, num_f, batch_size).clone()
        if c.empty_bag_probability > 0.0:
            empty = torch.rand((chunk, num_f, batch_size), generator=rng, device=dev) < c.empty_bag_probability
            lengths = lengths.masked_fill(empty, 0)
        lengths = lengths.reshape(chunk, num_f * batch_size)
        logits = self._logits(z, ids, lengths, layout, batch_size)
        labels = (torch.rand(logits.shape, generator=rng, device=dev) < torch.sigmoid(logits)).to(torch.float32)
        return _Chunk(first=number * chunk, dense=dense, ids=ids, lengths=lengths, labels=labels, logits=logits)

    def _chunk_of(self, index: int, batch_size: int) -> _Chunk:
        """The chunk holding batch ``index`` (made, or kept from an earlier call)."""
        key = (index // self._layout(batch_size).chunk, batch_size)
        found = self._chunks.pop(key, None)
        if found is None:
            found = self._make_chunk(*key)
        if len(self._chunks) >= 2:  # keep the last two used: a training and a validation stream alternate
            self._chunks.pop(next(iter(self._chunks)))
        self._chunks[key] = found
        return found

    def batch(self, index: int, batch_size: int) -> Batch:
        """Batch number ``index`` on the device (a pure function of seed, index, batch size and device type).

        Args:
            index: the batch number (any int >= 0).
            batch_size: samples in the batch.
        """
        return self.batch_and_logits(index, batch_size)[0]

    def batch_and_logits(self, index: int, batch_size: int) -> tuple[Batch, torch.Tensor]:
        """Batch number ``index`` and the hidden logits ``[B, T]`` its labels were drawn from.

        Args:
            index: the batch number (any int >= 0).
            batch_size: samples in the batch.
        """
        chunk = self._chunk_of(index, batch_size)
        part = index - chunk.first
        ids, lengths = chunk.ids[part], chunk.lengths[part]
        if self._fixed:
            values, per_key = ids, [int(n) * batch_size for n in self._bags]
        else:  # compacting variable bags: one host sync for the number of ids
            layout = self._layout(batch_size)
            bag_size = layout.chunk_bag_size[: lengths.numel()]
            slot_length = torch.repeat_interleave(lengths, bag_size, output_size=ids.numel())
            values, per_key = ids[layout.position < slot_length], None
        kjt = KeyedJaggedTensor(self.generator.feature_names, values, lengths=lengths, stride=batch_size,
                                validate=False, length_per_key=per_key)
        labels = chunk.labels[part]
        labels = labels.squeeze(1) if self.config.num_tasks == 1 else labels
        return Batch(dense_features=chunk.dense[part], sparse_features=kjt, labels=labels), chunk.logits[part]
