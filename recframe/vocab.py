"""The shared vocabulary: every kind a user names in a config, one ``str`` Enum each, defined here only.

Config schemas type their fields with these Enums (Hydra checks the values at composition and
says which ones exist), and the runtime compares against their members, never against string
literals. Each member's name is its value, the exact string users type (``sharding=row_wise``,
``tables.specs.t.pooling=mean``), so a member equals, hashes and prints like that string:
checkpoints, plans and JSON written before these Enums load unchanged, and a plain string
(``TableConfig(pooling="mean")``) works wherever a member does. This module imports nothing of
recframe, so every floor (config, embedding, distributed, training) may use it.

Example:
    >>> Pooling("mean") is Pooling.mean, Pooling.mean == "mean", f"{ShardingType.row_wise}", [Backend.torch]
    (True, True, 'row_wise', ['torch'])
    >>> Pooling.problem("pooling", "max")
    "pooling 'max' is unknown; choose one of ['sum', 'mean', 'none']"
    >>> list(ShardingMode)[:3]
    ['auto', 'table_wise', 'row_wise']
"""

from __future__ import annotations

from enum import Enum


class Vocab(str, Enum):
    """Base of the vocabulary Enums: a ``str`` that formats and reprs as its value (``repr(Pooling.sum)`` is ``'sum'``).

    Messages, logs and printed lists read as before the Enums (``['torch']``, ``pooling 'mean'``).
    """

    __str__ = str.__str__
    __format__ = str.__format__
    __repr__ = str.__repr__

    @classmethod
    def choices(cls) -> list[str]:
        """The values, in declaration order.

        Example:
            >>> IdPolicy.choices()
            ['error', 'modulo']
        """
        return [m.value for m in cls]

    @classmethod
    def problem(cls, what: str, value: object) -> str | None:
        """None when ``value`` is one of the values (a member or its string), else a sentence naming the choices.

        Args:
            what: the setting's name, as the sentence starts (``pooling``, ``table 't': pooling``).
            value: the value to check.

        Example:
            >>> WeightDtype.problem("weight_dtype", "fp16") is None
            True
        """
        if isinstance(value, str) and value in cls._value2member_map_:
            return None
        return f"{what} {str(value)!r} is unknown; choose one of {cls.choices()}"


class ShardingType(Vocab):
    """How one embedding table is split over ranks (``recframe.distributed.sharding`` has one rule per type).

    The declaration order is the planner's preference between options of equal cost.
    """

    table_wise = "table_wise"  # one rank holds the whole table
    row_wise = "row_wise"  # contiguous blocks of rows, one per rank
    column_wise = "column_wise"  # blocks of columns, one per rank
    table_row_wise = "table_row_wise"  # row_wise over the ranks of one node (or a few, each reducing its own)
    row_wise_routed = "row_wise_routed"  # row blocks; one row per id back to the sample's rank, pooled there
    data_parallel = "data_parallel"  # every rank holds the whole table


ShardingMode = Vocab("ShardingMode", [("auto", "auto"), *((t.name, t.value) for t in ShardingType),
                                      ("manual", "manual")], module=__name__)
ShardingMode.__doc__ = """What ``sharding.type`` asks for: ``auto`` (the planner), one ShardingType for every table, or
``manual`` (the plan in ``sharding.tables``). Its members are derived from ShardingType's."""


class RowBlocks(Vocab):
    """How the planner sizes the row blocks of a row-split table (``sharding.row_blocks``)."""

    auto = "auto"  # id_mass where the data declares its id law (synthetic data, data.zipf_exponent > 0), else even
    even = "even"  # equal numbers of rows; the cost model spreads ids evenly over rows
    id_mass = "id_mass"  # blocks of equal id mass under the data's id law (``data.zipf_exponent``), costed by that law


class Pooling(Vocab):
    """How a table's rows of one bag become one output row."""

    sum = "sum"  # the (weighted) sum
    mean = "mean"  # the (weighted) sum divided by the number of ids; an empty bag gives zeros
    none = "none"  # no pooling: one row per id (a sequence feature, EmbeddingCollection)


class WeightDtype(Vocab):
    """Storage dtype of a table's rows (outputs and optimizer states are fp32)."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class OutputDtype(Vocab):
    """The dtype of a pooled embedding collection's output (``tables.output_dtype``)."""

    auto = "auto"  # autocast's dtype where autocast is on for the output's device, else fp32
    fp32 = "fp32"  # always fp32


class Init(Vocab):
    """How a table's rows are initialized (scale ``s``: the table's ``init_scale``)."""

    uniform = "uniform"  # U(-s, s)
    normal = "normal"  # N(0, s^2)
    zeros = "zeros"


class IdPolicy(Vocab):
    """What happens to an id outside ``[0, num_embeddings)``."""

    error = "error"  # raise, naming the feature and the table
    modulo = "modulo"  # replaced by ``id mod num_embeddings`` (Python's sign convention)


class OptimizerName(Vocab):
    """The sparse optimizers fused into the embedding backward (formulas: ``recframe.embedding.optimizers``)."""

    sgd = "sgd"
    adagrad = "adagrad"  # exact, one accumulator per element
    rowwise_adagrad = "rowwise_adagrad"  # one accumulator per row
    adam = "adam"
    rowwise_adam = "rowwise_adam"  # second moment per row
    lamb = "lamb"  # adam with a per-row trust ratio (row norms)


class WeightDecayMode(Vocab):
    """How a sparse optimizer's weight decay acts."""

    l2 = "l2"  # added to the gradient (rowwise_adagrad only)
    decoupled = "decoupled"  # shrinks the weight


class Backend(Vocab):
    """The embedding kernel backend (``recframe.embedding.kernels.select``)."""

    auto = "auto"  # per table, the first of fbgemm, triton (CUDA only), torch that can run it
    fbgemm = "fbgemm"  # FBGEMM_GPU's table-batched kernels with the fused optimizer
    triton = "triton"  # our own fused Triton kernels
    torch = "torch"  # plain PyTorch: the portable reference


class LrDecay(Vocab):
    """The dense learning rate's decay after warmup (``optim.schedule.decay``)."""

    none = "none"  # constant at the peak
    linear = "linear"
    cosine = "cosine"
    polynomial = "polynomial"  # ``(1 - progress) ** power`` (MLPerf DLRM: power 2)


class TopologyDevice(Vocab):
    """Where the planner assumes the tables live (``sharding.topology.device``)."""

    auto = "auto"  # the trainer's accelerator
    cuda = "cuda"
    cpu = "cpu"


class MatmulPrecision(Vocab):
    """float32 matrix products on GPUs (``trainer.matmul_precision``; torch.set_float32_matmul_precision)."""

    highest = "highest"  # full float32
    high = "high"  # TF32 tensor cores (10-bit mantissa inputs, float32 accumulation)
    medium = "medium"  # bf16 tensor cores


class CudaGraph(Vocab):
    """Whether a GPU training step is one CUDA graph (``trainer.cuda_graph``; ``recframe.training.step_graph``)."""

    auto = "auto"  # where nothing rules it out (one GPU, graph-safe embedding kernels, not 16-mixed)
    on = "on"  # required: an error where something rules it out
    off = "off"  # every step eager


class Profiler(Vocab):
    """Lightning's profiler of a training run (``trainer.profiler``); its report goes to ``<run_dir>/profile``."""

    none = "none"  # no profiler
    simple = "simple"  # time per Lightning hook (a table at the end of fit)
    advanced = "advanced"  # cProfile per hook
    pytorch = "pytorch"  # torch.profiler: a trace (*.pt.trace.json) that Perfetto or chrome://tracing opens


class GenerateOn(Vocab):
    """Where synthetic batches are made (``data.generate_on``)."""

    auto = "auto"  # on the training device when it is a GPU, else on the host
    host = "host"  # numpy on the host (DataLoader workers can share the work)
    device = "device"  # torch on the training device (no workers needed)


class OnError(Vocab):
    """What a reader does with a malformed line or row (``data.on_error``; ``recframe.data.report``)."""

    skip = "skip"  # drop it, count it per kind, describe the first few
    error = "error"  # stop at the first, naming file:line and the field


class IdMapping(Vocab):
    """How a raw categorical value becomes a table row (``data.id_mapping``; row 0 is "missing")."""

    modulo = "modulo"  # 1 + hash(value) % (rows - 1): no vocabulary pass
    vocab = "vocab"  # rows by count in the training rows; rare values share an out-of-vocabulary row


class DenseTransform(Vocab):
    """What is applied to a dense column before training (a spec's ``dense.<f>.transform``)."""

    none = "none"
    log1p = "log1p"  # log(1 + max(x, 0))


class TableFormat(Vocab):
    """The file format of a tabular source (``data.format``)."""

    auto = "auto"  # Parquet for .parquet/.pq, libsvm for .libsvm/.svm/.ffm, else CSV
    csv = "csv"
    parquet = "parquet"  # needs pip install recframe[parquet]
    libsvm = "libsvm"  # lines of label field:id:value ... (libffm) or label key:value ... (libsvm)


class Quantize(Vocab):
    """How an exported model stores its tables (``recframe export quantize=``; ``recframe.serving.quantize``)."""

    none = "none"  # the trained fp32 rows
    fp16 = "fp16"  # half precision: 2 bytes a value
    int8 = "int8"  # 1 byte a value, a float32 scale and bias per row (fbgemm's 8-bit rowwise layout)
    int4 = "int4"  # 2 values a byte, a float16 scale and bias per row (fbgemm's 4-bit rowwise layout)


class ExportFormat(Vocab):
    """What ``recframe export format=`` writes (``recframe.training.export``)."""

    eager = "eager"  # torch.save of the unsharded model's weights and config: needs recframe to load
    exported = "exported"  # a torch.export program (.pt2): torch.export.load runs it without recframe
    aoti = "aoti"  # an AOTInductor package (.pt2): compiled kernels, loads without recframe (Python or C++)
    retrieval = "retrieval"  # a folder: the user tower as a torch.export program and every item's vector


class CommsDtype(Vocab):
    """The wire format of the pooled all-to-alls (``sharding.comms.forward_dtype`` / ``backward_dtype``)."""

    fp32 = "fp32"  # exact
    bf16 = "bf16"  # half the bytes, fp32's range, 8 mantissa bits
    fp16 = "fp16"  # half the bytes, 11 mantissa bits, scaled per sender by a power of two (no overflow)
