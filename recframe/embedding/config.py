"""Table and sparse-optimizer specs: plain dataclasses, usable as Hydra structured configs.

Fields use only the vocabulary's Enums (``recframe.vocab``), int/float/bool/list/Optional and
nested dataclasses, so OmegaConf can type-check them; a plain string works wherever a member does
(``pooling="mean"``), and :func:`check_tables` reports every unknown value at once, with the table name.

Example:
    >>> opt = SparseOptimizer(name="rowwise_adagrad", lr=0.05)
    >>> tables = [TableConfig(name="t0", num_embeddings=1000, embedding_dim=16, feature_names=["f0", "f1"])]
    >>> check_tables(tables, opt, sequence=False)
    []
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recframe.vocab import IdPolicy, Init, OptimizerName, Pooling, WeightDecayMode, WeightDtype

# Optimizers whose fused kernels (fbgemm's included) have no weight decay at all.
NO_WEIGHT_DECAY = frozenset({OptimizerName.sgd, OptimizerName.adagrad})
# Optimizers whose weight decay is the decoupled kind only (see recframe.embedding.optimizers).
DECOUPLED_ONLY = frozenset({OptimizerName.adam, OptimizerName.rowwise_adam, OptimizerName.lamb})


@dataclass
class SparseOptimizer:
    """A sparse optimizer fused into the embedding backward (formulas: ``recframe.embedding.optimizers``).

    Args:
        name: one of ``sgd``, ``adagrad`` (exact, per element), ``rowwise_adagrad`` (one accumulator
            per row), ``adam``, ``rowwise_adam`` (second moment per row), ``lamb``.
        lr: learning rate.
        eps: added to the denominator's square root (fbgemm's default, 1e-8; torch's Adagrad uses 1e-10).
        weight_decay: decay coefficient; must be 0 for ``sgd`` and ``adagrad`` (their fused kernels have none).
        weight_decay_mode: ``l2`` (added to the gradient; rowwise_adagrad only) or ``decoupled``
            (shrinks the weight; every optimizer that has weight decay). Ignored when weight_decay is 0.
        betas: ``[beta1, beta2]`` for adam, rowwise_adam and lamb.

    Example:
        >>> SparseOptimizer(name="adam", lr=1e-3, betas=[0.9, 0.99]).betas
        [0.9, 0.99]
    """

    name: OptimizerName = OptimizerName.rowwise_adagrad  # sgd | adagrad | rowwise_adagrad | adam | rowwise_adam | lamb
    lr: float = 0.01  # learning rate
    eps: float = 1e-8  # denominator epsilon (fbgemm's default)
    weight_decay: float = 0.0  # weight decay coefficient; 0 = none
    weight_decay_mode: WeightDecayMode = WeightDecayMode.decoupled  # l2 (rowwise_adagrad only) | decoupled
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # [beta1, beta2] of adam/rowwise_adam/lamb

    def problems(self) -> list[str]:
        """Every inconsistency of this optimizer spec, as readable sentences (empty when valid)."""
        out: list[str] = []
        out += filter(None, [OptimizerName.problem("optimizer name", self.name)])
        if not self.lr >= 0:
            out.append(f"optimizer lr must be >= 0, got {self.lr}")
        if not self.eps >= 0:
            out.append(f"optimizer eps must be >= 0, got {self.eps}")
        out += filter(None, [WeightDecayMode.problem("optimizer weight_decay_mode", self.weight_decay_mode)])
        if self.weight_decay < 0:
            out.append(f"optimizer weight_decay must be >= 0, got {self.weight_decay}")
        elif self.weight_decay > 0:
            if self.name in NO_WEIGHT_DECAY:
                out.append(f"optimizer '{self.name}' has no weight decay (fbgemm's fused {self.name} has "
                           "none); set weight_decay=0 or use rowwise_adagrad/adam/rowwise_adam/lamb")
            elif self.name in DECOUPLED_ONLY and self.weight_decay_mode != WeightDecayMode.decoupled:
                out.append(f"optimizer '{self.name}' supports only weight_decay_mode='decoupled', "
                           f"got '{self.weight_decay_mode}'")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            out.append(f"optimizer betas must be two numbers in [0, 1), got {list(self.betas)}")
        return out


@dataclass
class TableConfig:
    """One embedding table and the features it serves.

    Args:
        name: table name, unique in a collection; state dict keys are ``"<name>.weight"``. No dots.
        num_embeddings: number of rows.
        embedding_dim: width of a row.
        feature_names: the features looked up in this table (several = a shared table).
        pooling: ``sum`` or ``mean`` (pooled, for EmbeddingBagCollection) or ``none`` (sequence,
            for EmbeddingCollection). Mean divides the (weighted) sum by the number of ids; an
            empty bag gives zeros.
        init: ``uniform`` (U(-s, s)), ``normal`` (N(0, s^2)) or ``zeros``.
        init_scale: ``s`` above; None means ``1 / sqrt(num_embeddings)`` (TorchRec's default scale).
        weight_dtype: storage dtype of the rows: ``fp32``, ``fp16`` or ``bf16``. Outputs and
            optimizer states are fp32; updates are computed in fp32 and rounded to nearest.
        id_policy: ``error`` (an id outside [0, num_embeddings) raises, naming feature and table)
            or ``modulo`` (ids are replaced by ``id mod num_embeddings``, Python-style, so negative
            ids land in range too).
        optimizer: this table's optimizer; None means the collection's.

    Example:
        >>> TableConfig(name="user", num_embeddings=100, embedding_dim=8, feature_names=["user_id"]).pooling
        'sum'
    """

    name: str = "???"  # table name (no dots)
    num_embeddings: int = 0  # rows
    embedding_dim: int = 0  # row width
    feature_names: list[str] = field(default_factory=list)  # features served by this table
    pooling: Pooling = Pooling.sum  # sum | mean | none (sequence)
    init: Init = Init.uniform  # uniform | normal | zeros
    init_scale: float | None = None  # None = 1/sqrt(num_embeddings)
    weight_dtype: WeightDtype = WeightDtype.fp32  # fp32 | fp16 | bf16 storage dtype
    id_policy: IdPolicy = IdPolicy.error  # error | modulo for ids outside [0, num_embeddings)
    optimizer: SparseOptimizer | None = None  # None = the collection's optimizer

    def problems(self) -> list[str]:
        """Every inconsistency of this table spec, each prefixed with the table name."""
        where = f"table {self.name!r}"
        out: list[str] = []
        if not self.name or "." in self.name or self.name == "???":
            out.append(f"{where}: name must be a non-empty string without dots")
        if self.num_embeddings <= 0:
            out.append(f"{where}: num_embeddings must be > 0, got {self.num_embeddings}")
        if self.embedding_dim <= 0:
            out.append(f"{where}: embedding_dim must be > 0, got {self.embedding_dim}")
        if not self.feature_names:
            out.append(f"{where}: feature_names is empty; a table serves at least one feature")
        out += [f"{where}: {p}" for p in (Pooling.problem("pooling", self.pooling),
                                          Init.problem("init", self.init)) if p is not None]
        if self.init_scale is not None and self.init_scale < 0:
            out.append(f"{where}: init_scale must be >= 0, got {self.init_scale}")
        out += [f"{where}: {p}" for p in (WeightDtype.problem("weight_dtype", self.weight_dtype),
                                          IdPolicy.problem("id_policy", self.id_policy)) if p is not None]
        if self.optimizer is not None:
            out.extend(f"{where}: {p}" for p in self.optimizer.problems())
        return out


def check_tables(tables: list[TableConfig], optimizer: SparseOptimizer, sequence: bool) -> list[str]:
    """All problems of a collection's tables and optimizer, for one error listing them all.

    Args:
        tables: the collection's tables.
        optimizer: the collection's optimizer (used by tables whose ``optimizer`` is None).
        sequence: True for an EmbeddingCollection (pooling must be ``none``), False for an
            EmbeddingBagCollection (pooling ``sum`` or ``mean``).

    Returns:
        Readable problem sentences; empty when everything is valid.
    """
    out: list[str] = []
    if not tables:
        out.append("a collection needs at least one table")
    out.extend(optimizer.problems())
    seen_tables: set[str] = set()
    feature_owner: dict[str, str] = {}
    for table in tables:
        out.extend(table.problems())
        if table.name in seen_tables:
            out.append(f"table name {table.name!r} is used twice")
        seen_tables.add(table.name)
        for feature in table.feature_names:
            if feature in feature_owner:
                out.append(f"feature {feature!r} is served by tables {feature_owner[feature]!r} and "
                           f"{table.name!r}; a feature belongs to one table")
            feature_owner.setdefault(feature, table.name)
        if sequence and table.pooling != Pooling.none:
            out.append(f"table {table.name!r}: EmbeddingCollection needs pooling='none', got '{table.pooling}'")
        if not sequence and table.pooling == Pooling.none:
            out.append(f"table {table.name!r}: pooling='none' (sequence) belongs in an EmbeddingCollection")
    return out


def table_optimizer(table: TableConfig, default: SparseOptimizer) -> SparseOptimizer:
    """The optimizer a table trains with: its own, else the collection's.

    Args:
        table: the table.
        default: the collection's optimizer.
    """
    return table.optimizer if table.optimizer is not None else default
