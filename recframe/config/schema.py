"""Structured-config schemas: one dataclass per config group, registered in Hydra's ConfigStore.

Every YAML file of a group starts from its schema (``defaults: [<group>_schema, _self_]`` or the
root's), so a misspelled key fails at composition with its full path. Every setting has its
default here, with a comment saying its meaning; code never reads a setting that is not here.
The ``model`` and ``data`` groups have one schema per option (a DLRM has no two-tower keys).

Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(TrainConfig)
    >>> cfg.trainer.max_steps
    -1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from recframe.config.sharding import ShardingConfig
from recframe.embedding.config import SparseOptimizer, TableConfig
from recframe.vocab import (
    Backend,
    CudaGraph,
    IdPolicy,
    LrDecay,
    MatmulPrecision,
    OutputDtype,
    Pooling,
    Profiler,
    WeightDtype,
)


@dataclass
class FeaturesConfig:
    """The model's inputs, by name."""

    dense: list[str] = field(default_factory=list)  # dense (float) features, in column order
    sparse: list[str] = field(default_factory=list)  # sparse (id-bag) features, in KJT key order


@dataclass
class TableSpec:
    """One entry of ``tables.specs``: the config form of ``recframe.embedding.config.TableConfig``.

    ``recframe.config.resolve.table_configs`` turns it into a TableConfig: the name is its key in
    ``specs``, unset sizes come from the table set (capped at ``row_cap``), and ``weight_dtype`` and
    ``id_policy`` are the set's (TablesConfig), the same for every table of a run. Defaults that
    both have are TableConfig's.
    """

    features: list[str] = MISSING  # the sparse features looked up in this table (TableConfig.feature_names)
    num_embeddings: int | None = None  # rows; None: tables.num_embeddings
    embedding_dim: int | None = None  # columns; None: tables.embedding_dim
    pooling: Pooling = TableConfig.pooling  # sum (default) | mean | none (sequence feature, EmbeddingCollection)


@dataclass
class TablesConfig:
    """A set of embedding tables."""

    num_embeddings: int = 100_000  # default rows per table
    embedding_dim: int = 64  # default embedding dim
    weight_dtype: WeightDtype = TableConfig.weight_dtype  # storage dtype of table weights: fp32 (default) | fp16 | bf16
    backend: Backend = Backend.auto  # kernel backend: auto | fbgemm | triton | torch
    output_dtype: OutputDtype = OutputDtype.auto  # pooled embeddings' dtype: auto (under autocast its dtype, for
    # models that cast them to it first: dlrm_dcn; else fp32) | fp32 (always)
    id_policy: IdPolicy = TableConfig.id_policy  # ids outside [0, rows): error (default; names feature, table) | modulo
    row_cap: int | None = None  # cap every table at this many rows, to fit a small machine (None: no cap)
    specs: dict[str, TableSpec] = field(default_factory=dict)  # table name -> spec


@dataclass
class DenseOptimConfig:
    """The optimizer of the dense towers (a torch.optim optimizer)."""

    name: str = "adagrad"  # adagrad | adam | adamw | sgd
    lr: float = 0.01  # peak learning rate
    weight_decay: float = 0.0  # weight decay (decoupled for adamw)
    eps: float = 1.0e-8  # denominator epsilon (adagrad, adam, adamw)
    beta1: float = 0.9  # first-moment decay (adam, adamw)
    beta2: float = 0.999  # second-moment decay (adam, adamw)
    momentum: float = 0.0  # momentum (sgd)
    fused: bool = True  # a fused kernel: torch's (CPU; GPU: adam, adamw, sgd), recframe's (GPU: adagrad)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule of the dense optimizer, stepped every optimizer step."""

    warmup_steps: int = 0  # linear warmup from 0 to the peak lr over this many steps
    decay: LrDecay = LrDecay.none  # after warmup: none | linear | cosine | polynomial
    decay_start_step: int = 0  # step at which decay starts (>= warmup_steps)
    decay_steps: int = 0  # steps over which lr falls to min_lr_ratio * lr (0: no decay)
    min_lr_ratio: float = 0.0  # final lr as a fraction of the peak lr
    power: float = 2.0  # exponent of the polynomial decay (MLPerf DLRM uses 2)


@dataclass
class OptimConfig:
    sparse: SparseOptimizer = field(default_factory=SparseOptimizer)  # fused into the tables' backward
    dense: DenseOptimConfig = field(default_factory=DenseOptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # the sparse (fused) optimizer's LR schedule, of the same form: its lr (and each table's own) times the factor
    sparse_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    gradient_clip_val: float | None = None  # clip the dense gradients' norm (None: off)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (names as in pytorch_lightning.Trainer)."""

    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: int = 1  # processes (CPU) or GPUs per node
    num_nodes: int = 1  # nodes
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (dense towers)
    max_steps: int = -1  # stop after this many optimizer steps (-1: use max_epochs)
    max_epochs: int = 1  # stop after this many epochs
    val_check_interval: int | None = None  # validate every N training steps (None: each epoch)
    limit_val_batches: int | None = None  # cap validation batches (None: all)
    # scalar logging period: an integer, or auto: max(1, min(50, max_steps // 20)) (~20 points a run; 50 by epochs)
    log_every_n_steps: str = "auto"
    profiler: Profiler = Profiler.none  # Lightning's profiler: none | simple | advanced | pytorch (<run_dir>/profile)
    enable_progress_bar: bool = True  # Lightning's progress bar
    progress_bar_refresh_steps: int = 10  # redraw the progress bar every N steps (a redraw waits for the GPU)
    deterministic: bool = False  # torch deterministic algorithms
    matmul_precision: MatmulPrecision = MatmulPrecision.highest  # float32 matmuls: highest | high (TF32) | medium
    pipeline: bool = True  # batch i+1 under batch i: GPU copy on a side stream; input all-to-all with >1 rank
    compile_dense: bool = False  # torch.compile the dense towers, interaction and head (not the embeddings)
    cuda_graph: CudaGraph = CudaGraph.auto  # one CUDA graph per step (forward, loss, backward): auto | on | off
    monitor: str = "auto"  # the validation metric of early stopping and restore_best: auto (val/auc, the first
    # task's val/<task>/auc, retrieval: val/recall@10) or a val/ key (logloss, ne: lower is better)
    early_stopping_patience: int = 0  # stop after this many validations without improving the monitor (0: never)
    restore_best: bool = False  # end training with the weights of the best validation (metrics.json's val/*)


@dataclass
class ProjectorConfig:
    """Embeddings in TensorBoard's Projector, written at the end of training (rank 0)."""

    tables: list[str] = field(default_factory=list)  # the tables to show (none by default)
    rows: int = 1000  # the most looked-up rows of each (with their id and lookup count as metadata)


@dataclass
class LoggerConfig:
    """TensorBoard logging."""

    tensorboard: bool = True  # write TensorBoard event files under <run_dir>/tensorboard
    # table health period (row-norm histogram and stats, coverage, skew, out-of-range ids, optimizer state,
    # tables/summary); 0: off (no lookup counting either)
    table_stats_every_n_steps: str = "auto"  # table health every N steps: auto (~5 a run) | N | 0 (off)
    curves: bool = True  # the final validation's PR curve and reliability diagram (val/pr_curve, val/calibration)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    dir: str | None = None  # where event files go (default <run_dir>/tensorboard); a path or an fsspec URL (s3://...)


@dataclass
class CheckpointConfig:
    """Checkpoints under <run_dir>/checkpoints/step-N (sharded, resumable, loadable into any world size)."""

    every_n_steps: int = 500  # save every N training steps (0: only at the end of training and on SIGTERM)
    keep_last: int = 2  # complete checkpoints kept (int >= 1); older step-N folders are deleted
    sigterm_check_every_n_steps: int = 10  # several ranks: how often they tell each other of a SIGTERM (>= 1)
    dir: str | None = None  # where step-N folders go (default <run_dir>/checkpoints); a path or an fsspec URL (s3://...)


@dataclass
class DistributedConfig:
    """Several processes: how long to wait for a peer before stopping."""

    timeout_s: float = 300.0  # timeout of every collective (gloo/NCCL); a peer silent this long is lost
    startup_timeout_s: float = 900.0  # how long the ranks wait for each other to start (the first rendezvous)
    watchdog: bool = True  # heartbeats between the ranks: a dead peer stops the others within seconds


@dataclass
class StorageConfig:
    """fsspec URLs (``s3://``, ``gs://``, ``memory://`` ...): options and the local copies of remote datasets."""

    # fsspec options by protocol, given to every filesystem the run opens (data, checkpoints, logger, export), over
    # those of the environment (AWS_*, FSSPEC_<PROTOCOL>): e.g. {s3: {endpoint_url: "http://host:9000"}}
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # where remote datasets that are read from local disk (criteo_binary, criteo_multihot, MovieLens folders) are
    # copied once per machine (None: $XDG_CACHE_HOME/recframe, else ~/.cache/recframe)
    cache_dir: str | None = None


@dataclass
class BenchConfig:
    """``recframe bench``: the real training path, timed."""

    warmup_steps: int = 10  # steps before timing starts
    steps: int = 30  # timed steps


@dataclass
class TrainConfig:
    """The root config of ``recframe train``."""

    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    model: Any = MISSING  # a model/ option (its schema: its module's, recframe.models.zoo.MODELS)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: Any = MISSING  # a data/ option (its own schema: recframe.config.data)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)  # fsspec options, the cache of remote datasets
    seed: int = 42  # seed of model initialization (and of everything not seeded elsewhere)
    run_dir: str = "${hydra:runtime.output_dir}"  # the run directory; every output goes under it
    # train: resume from a checkpoints/step-N folder or "last" (the run dir's newest); eval: the checkpoint
    ckpt_path: str | None = None
    bench: BenchConfig = field(default_factory=BenchConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)  # a sharding/ option: planner or fixed plan
    world_size: int | None = None  # ranks to plan for (recframe plan); None: trainer.devices x trainer.num_nodes
    # other libraries' log lines (Lightning, fbgemm, torch): WARNING (default) hides their INFO chatter, INFO or
    # DEBUG shows it; recframe's own INFO lines are always shown, and hydra.verbose=true shows everything
    log_level: str = "WARNING"
