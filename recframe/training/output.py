"""What a run prints: recframe's own log lines, other libraries' only from ``log_level`` up, each warning once.

Each process of a run used to print ~24 INFO lines of fbgemm_gpu (logged on the root logger, one of
3.9 KB), Lightning's device lines and its "litlogger" tip, and the same two warnings twice (once in
``fit``, once in the final ``validate``). :func:`configure_output`, called as a job starts, hides the
log records of other libraries below ``log_level`` (default ``WARNING``) with a filter on the
handlers Hydra set up (console and ``<run dir>/recframe.log``): a filter, not logger levels, because
fbgemm logs on the root logger and Lightning sets its loggers' level when it is imported. recframe's
records (the ``recframe`` logger and its children) always pass. ``hydra.verbose=true`` (Hydra's debug
logging) leaves everything shown. A warning (the same text and category) is shown once per process
unless ``-W`` or ``PYTHONWARNINGS`` says otherwise: by ``warnings.showwarning``, since Python's ``once``
action forgets what it showed whenever a library changes the filters (Lightning and torch do, between
``fit`` and ``validate``). Lightning's warning about an ``IterableDataset`` with ``__len__``
is not shown: recframe's datasets split their batches over DataLoader workers themselves
(``get_worker_info``), so their length is exact.

Example:
    >>> record = logging.LogRecord("root", logging.INFO, "", 0, "Successfully loaded: 'fbgemm_gpu_py.so'", None, None)
    >>> LibraryFilter(logging.WARNING).filter(record)
    False
    >>> record.name = "recframe.embedding"
    >>> LibraryFilter(logging.WARNING).filter(record)
    True
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from typing import TextIO

from omegaconf import DictConfig

OWN_LOGGER = "recframe"
# Lightning gives these loggers a handler of their own, and stops their propagation, when it is imported before
# the root logger has handlers (before Hydra set up logging): configure_output sends them through Hydra's again
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


class LibraryFilter(logging.Filter):
    """Passes recframe's records, and other loggers' records from ``level`` up.

    Args:
        level: the lowest level shown of other libraries' records.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + ".")
        return own or record.levelno >= self.level


class ShowOnce:
    """``warnings.showwarning`` that shows each (category, text) once and passes the rest to ``show``.

    Args:
        show: the function that shows a warning (``warnings.showwarning`` before).
    """

    def __init__(self, show: Callable[..., None]) -> None:
        self.show = show
        self.seen: set[tuple[type, str]] = set()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        key = (category, str(message))
        if key not in self.seen:
            self.seen.add(key)
            self.show(message, category, filename, lineno, file, line)


def configure_output(cfg: DictConfig, verbose: bool) -> None:
    """Set up a job's output: other libraries' log records from ``cfg.log_level`` up, each warning once.

    Args:
        cfg: the run config (``log_level``: a logging level name).
        verbose: Hydra's ``hydra.verbose`` is true: show every record.
    """
    if not sys.warnoptions and not isinstance(warnings.showwarning, ShowOnce):  # -W or PYTHONWARNINGS decide
        warnings.showwarning = ShowOnce(warnings.showwarning)  # fit and validate raise the same warnings
    # recframe's IterableDatasets split batches over workers themselves (get_worker_info): __len__ is exact
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
    root = logging.getLogger()
    for name in LIGHTNING_LOGGERS if root.handlers else ():
        logger = logging.getLogger(name)
        if not logger.propagate:
            for handler in logger.handlers[:]:
                logger.removeHandler(handler)
            logger.propagate = True
    if verbose:
        return
    level = logging.getLevelName(str(cfg.log_level).upper())
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, LibraryFilter)]:
            handler.removeFilter(old)
        if level > logging.INFO:
            handler.addFilter(LibraryFilter(level))
    if level < logging.INFO:  # DEBUG: let the records reach the handlers
        root.setLevel(level)
