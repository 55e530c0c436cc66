"""Validation metrics computed exactly over the whole validation set, synced across ranks by torchmetrics.

``CTRMetrics`` keeps every logit, label and weight (list states with ``dist_reduce_fx="cat"``), so
after torchmetrics gathers them from all ranks it computes on the full set: no thresholds, no
binning, no averaging of per-rank values. With logits ``x_i``, labels ``y_i`` in {0, 1}, sample
weights ``w_i`` (1 when not given; weight 0 drops a sample), ``p_i = sigmoid(x_i)`` and sums over
samples, all in float64:

- ``logloss = sum w_i * (softplus(x_i) - y_i * x_i) / sum w_i``: the mean binary cross-entropy of
  ``p_i``, computed from the logits so it stays finite for any finite logit.
- ``ctr = sum w_i y_i / sum w_i``.
- ``ne = logloss / H(ctr)`` with ``H(c) = -(c log c + (1 - c) log(1 - c))``: normalized entropy
  (He et al. 2014, "Practical lessons from predicting clicks on ads at Facebook"). Lower is better;
  1 means no better than predicting ``ctr`` for everyone.
- ``calibration = (sum w_i p_i / sum w_i) / ctr``: 1 when the mean prediction matches the data.
- ``auc``: the exact ROC AUC, the probability that a random positive scores above a random negative,
  ties counting half (the Mann-Whitney U with average ranks); pairs weigh ``w_i * w_j``. It ranks
  logits, not probabilities, since a float sigmoid turns distinct large logits into ties. Cost is
  O(n log n): sort the distinct scores, then count the negatives below each group of equal scores.
- ``num_samples``: how many samples have a nonzero weight (int64).

Undefined values are nan: ``auc`` when there are no positives or no negatives (with a warning,
once per task and metric object); ``ne`` when ctr is 0 or 1; ``calibration`` when ctr is 0;
every value but ``num_samples`` (0) when no sample was seen.

``RecallAtK`` counts, for retrieval, how often the target is among the top k candidates. With
ties, a target counts as retrieved at k if its rank, the number of candidates with a strictly
higher score, is below k (a target tied with the k-th best counts). A k of at least the number of
candidates therefore always counts: it acts as ``k = num_candidates``.

Example:
    >>> import torch
    >>> metric = CTRMetrics()
    >>> metric.update(torch.tensor([2.0, -1.0, 0.5, -3.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    >>> out = metric.compute()
    >>> round(out["auc"].item(), 3), round(out["ctr"].item(), 3), out["num_samples"].item()
    (0.5, 0.5, 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn

CTR_KEYS: tuple[str, ...] = ("auc", "ne", "logloss", "calibration", "ctr", "num_samples")
# The stored batches' dtype (compute() works in float64). Not Metric.dtype: torchmetrics before 1.1, which
# pytorch-lightning allows (TorchRec pins 1.0.3), has no such attribute.
_STORED = torch.float32


def binary_auc(scores: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Exact weighted ROC AUC with ties counted half, in O(n log n); nan without positives or negatives.

    Args:
        scores: ``[n]`` scores (logits or probabilities; only their order matters).
        labels: ``[n]`` labels in {0, 1}.
        weights: ``[n]`` non-negative sample weights, or None for all ones.

    Example:
        >>> binary_auc(torch.tensor([0.1, 0.4, 0.4, 0.8]), torch.tensor([0.0, 0.0, 1.0, 1.0])).item()
        0.875
    """
    labels = labels.double()
    weights = torch.ones_like(labels) if weights is None else weights.double()
    positive = weights * labels
    negative = weights - positive
    distinct, group = torch.unique(scores, sorted=True, return_inverse=True)
    pos_per_group = positive.new_zeros(distinct.numel()).index_add_(0, group, positive)
    neg_per_group = negative.new_zeros(distinct.numel()).index_add_(0, group, negative)
    neg_below = torch.cumsum(neg_per_group, 0) - neg_per_group
    wins = (pos_per_group * (neg_below + 0.5 * neg_per_group)).sum()
    return wins / (positive.sum() * negative.sum())  # 0 / 0 = nan without positives or negatives


def _concat(state: Tensor | list[Tensor], like: Tensor) -> Tensor:
    """One tensor from a list state (several updates) or an already gathered tensor (after sync)."""
    if isinstance(state, Tensor):
        return state
    return torch.cat(state) if state else like.new_zeros(0)


class CTRMetrics(Metric):
    """AUC, normalized entropy, logloss, calibration and CTR of binary tasks, exact over all data.

    The module docstring defines each value and its undefined cases. ``compute`` returns float64
    scalars (``num_samples`` int64) under the keys ``auc``, ``ne``, ``logloss``, ``calibration``,
    ``ctr`` and ``num_samples``; with ``task_names`` each key is prefixed ``<task>/``.

    Args:
        task_names: names of the tasks, in the column order of ``[batch, num_tasks]`` logits and
            labels; None for one task with ``[batch]`` logits and unprefixed keys.
        compute_on_cpu: move the stored logits, labels and weights to the CPU after each update,
            to spare accelerator memory on a large validation set.

    Example:
        >>> import torch
        >>> metric = CTRMetrics(task_names=["click", "purchase"])
        >>> metric.update(torch.randn(8, 2), torch.randint(0, 2, (8, 2)).float())
        >>> sorted(metric.compute())[:3]
        ['click/auc', 'click/calibration', 'click/ctr']
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    logits: list[Tensor] | Tensor
    labels: list[Tensor] | Tensor
    weights: list[Tensor] | Tensor

    def __init__(self, task_names: Sequence[str] | None = None, compute_on_cpu: bool = False) -> None:
        super().__init__(compute_on_cpu=compute_on_cpu)
        if task_names is not None and (not task_names or len(set(task_names)) != len(task_names)):
            raise ValueError(f"task_names must be None or non-empty and unique, got {list(task_names)}")
        self.task_names = None if task_names is None else tuple(task_names)
        # States are flat (row-major [batch * num_tasks]) so a rank without data gathers as 1-D empty.
        for name in ("logits", "labels", "weights"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._warned_auc: set[str] = set()

    @property
    def _num_tasks(self) -> int:
        return 1 if self.task_names is None else len(self.task_names)

    def update(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> None:
        """Store one batch.

        Args:
            logits: ``[batch]`` logits, or ``[batch, num_tasks]`` with ``task_names``.
            labels: 0/1 labels of the same shape (any dtype).
            weights: sample weights of the same shape, or ``[batch]`` for every task; None for ones.
        """
        per_row = () if self.task_names is None else (self._num_tasks,)
        expected = f"[batch{''.join(f', {n}' for n in per_row)}]"
        if logits.dim() == 0 or logits.shape[1:] != per_row:
            raise ValueError(f"logits must be {expected}, got shape {tuple(logits.shape)}")
        if labels.shape != logits.shape:
            raise ValueError(f"labels must have the logits' shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
        if weights is None:
            weights = torch.ones_like(logits, dtype=_STORED)
        elif per_row and weights.shape == logits.shape[:1]:
            weights = weights.unsqueeze(1).expand_as(logits)
        elif weights.shape != logits.shape:
            raise ValueError(f"weights must be {expected} or [batch], got shape {tuple(weights.shape)}")
        for name, value in (("logits", logits), ("labels", labels), ("weights", weights)):
            getattr(self, name).append(value.detach().to(_STORED).reshape(-1))

    def compute(self) -> dict[str, Tensor]:
        """Every value for every task; see the class docstring for the keys."""
        like = torch.zeros(0, dtype=torch.float64, device=self.device)
        logits, labels, weights = (
            _concat(getattr(self, name), like).double().reshape(-1, self._num_tasks)
            for name in ("logits", "labels", "weights")
        )
        if self.task_names is None:
            return self._task_metrics(logits[:, 0], labels[:, 0], weights[:, 0], prefix="")
        out: dict[str, Tensor] = {}
        for column, name in enumerate(self.task_names):
            out.update(self._task_metrics(logits[:, column], labels[:, column], weights[:, column], f"{name}/"))
        return out

    def _task_metrics(self, logits: Tensor, labels: Tensor, weights: Tensor, prefix: str) -> dict[str, Tensor]:
        nan = logits.new_tensor(float("nan"))
        total = weights.sum()
        ctr = (weights * labels).sum() / total
        logloss = (weights * F.binary_cross_entropy_with_logits(logits, labels, reduction="none")).sum() / total
        mean_prediction = (weights * torch.sigmoid(logits)).sum() / total
        entropy = -(ctr * torch.log(ctr) + (1 - ctr) * torch.log1p(-ctr))
        auc = binary_auc(logits, labels, weights)
        num_samples = (weights != 0).sum()
        if auc.isnan() and num_samples > 0 and prefix not in self._warned_auc:
            self._warned_auc.add(prefix)
            task = f"task {prefix[:-1]!r}" if prefix else "the task"
            rank_zero_warn(f"AUC of {task} is undefined (nan): all labels are equal (ctr={ctr.item():.3g}).")
        values = {
            "auc": auc,
            "ne": torch.where((ctr > 0) & (ctr < 1), logloss / entropy, nan),
            "logloss": logloss,
            "calibration": torch.where(ctr > 0, mean_prediction / ctr, nan),
            "ctr": ctr,
            "num_samples": num_samples,
        }
        return {prefix + key: values[key] for key in CTR_KEYS}


class RecallAtK(Metric):
    """Recall@k for retrieval: the fraction of queries whose target ranks among the top k candidates.

    The rank of a target is the number of candidates with a strictly higher score; it is retrieved
    at k when that rank is below k, so ties go in its favour and any k of at least the number of
    candidates counts every target. ``compute`` returns float64 values under ``recall@<k>``, nan
    before any update.

    Args:
        ks: the cut-offs, positive and distinct, reported in this order.

    Example:
        >>> import torch
        >>> metric = RecallAtK(ks=(1, 2))
        >>> metric.update(torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]]), torch.tensor([2, 1]))
        >>> {k: v.item() for k, v in metric.compute().items()}
        {'recall@1': 0.5, 'recall@2': 1.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    hits: Tensor
    total: Tensor

    def __init__(self, ks: Sequence[int] = (1, 10, 50, 100)) -> None:
        super().__init__()
        if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"ks must be positive and distinct, got {list(ks)}")
        self.ks = tuple(int(k) for k in ks)
        self.add_state("hits", default=torch.zeros(len(self.ks), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, target_index: Tensor) -> None:
        """Count the hits of one batch of queries.

        Args:
            scores: ``[batch, num_candidates]`` scores of every candidate for each query (for
                in-batch negatives: ``query_embeddings @ item_embeddings.T``).
            target_index: ``[batch]`` column of each query's true item.
        """
        if scores.dim() != 2 or target_index.shape != scores.shape[:1]:
            raise ValueError(
                f"expected scores [batch, num_candidates] and target_index [batch], "
                f"got {tuple(scores.shape)} and {tuple(target_index.shape)}"
            )
        scores = scores.detach()
        target_scores = scores.gather(1, target_index.long().unsqueeze(1))
        rank = (scores > target_scores).sum(dim=1)
        ks = torch.tensor(self.ks, device=scores.device)
        self.hits += (rank.unsqueeze(1) < ks).sum(dim=0)
        self.total += scores.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """``recall@<k>`` for each k."""
        recall = self.hits.double() / self.total
        return {f"recall@{k}": recall[i] for i, k in enumerate(self.ks)}
