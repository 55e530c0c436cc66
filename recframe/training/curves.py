"""The final validation's PR curve and reliability diagram in TensorBoard (rank 0's validation samples).

After training, ``recframe train`` validates once more over the whole validation set; this callback
then writes, for each task of a CTR model (``logger.curves``):

- ``val/pr_curve`` (``val/pr_curve_<task>`` with several tasks): TensorBoard's PR-curve plugin
  (precision and recall at 127 thresholds of the predicted probability);
- ``val/calibration`` (an image; ``val/calibration_<task>``): the reliability diagram, the observed
  click rate of each of 10 equal-width bins of the predicted probability (blue bars, their width
  the bin) against the diagonal of perfect calibration (grey), drawn with numpy.

Only the CTR metrics keep the samples (``CTRMetrics``); with several ranks, rank 0 draws its share.

Example:
    >>> image = reliability_image(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    >>> image.shape, image.dtype
    ((200, 200, 3), dtype('uint8'))
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from recframe.training.metrics import CTRMetrics

SIZE = 200  # pixels of the reliability diagram's side
BINS = 10


def reliability_image(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS, size: int = SIZE) -> np.ndarray:
    """A reliability diagram as an ``[size, size, 3]`` uint8 image (module docstring).

    Args:
        probs: ``[n]`` predicted probabilities.
        labels: ``[n]`` 0/1 labels.
        bins: equal-width probability bins.
        size: the image's side in pixels.
    """
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    p, y = probs.double().cpu().numpy(), labels.double().cpu().numpy()
    which = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    seen = np.bincount(which, minlength=bins)
    rate = np.bincount(which, weights=y, minlength=bins) / np.maximum(seen, 1)
    for b in range(bins):
        if seen[b]:
            top = size - int(round(rate[b] * (size - 1))) - 1
            image[top:, b * size // bins + 1:(b + 1) * size // bins - 1] = (66, 133, 244)
    diagonal = np.arange(size)
    image[size - 1 - diagonal, diagonal] = (120, 120, 120)  # perfect calibration
    image[-1, :], image[:, 0] = (0, 0, 0), (0, 0, 0)  # axes
    return image


class FinalCurves(pl.Callback):
    """Writes the PR curve and the reliability diagram of the final validation (``trainer.validate``; rank 0)."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = getattr(pl_module, "val_metrics", None)  # read before the module's hook computes and resets it
        if (trainer.state.fn != TrainerFn.VALIDATING or not trainer.is_global_zero or trainer.logger is None
                or not isinstance(metrics, CTRMetrics) or not metrics.logits):
            return
        experiment = trainer.logger.experiment
        if not hasattr(experiment, "add_pr_curve"):
            return
        names = list(metrics.task_names or [""])
        logits = torch.cat(list(metrics.logits)).view(-1, len(names))
        labels = torch.cat(list(metrics.labels)).view(-1, len(names))
        weights = torch.cat(list(metrics.weights)).view(-1, len(names))
        for i, name in enumerate(names):
            keep = weights[:, i] > 0
            probs, truth = torch.sigmoid(logits[keep, i]).float().cpu(), labels[keep, i].cpu()
            suffix = f"_{name}" if name else ""
            experiment.add_pr_curve(f"val/pr_curve{suffix}", truth.int(), probs, global_step=trainer.global_step)
            experiment.add_image(f"val/calibration{suffix}", reliability_image(probs, truth),
                                 global_step=trainer.global_step, dataformats="HWC")
