"""What a run prints (recframe.training.output): other libraries' log records from log_level up, warnings once."""

from __future__ import annotations

import io
import logging
import warnings

import pytest
from omegaconf import OmegaConf

from recframe.training.checks import find_problems
from recframe.training.output import ShowOnce, configure_output


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The root logger with one handler (as Hydra sets it up) writing to a buffer; log() returns what it printed."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # configure_output replaces it
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    saved = root.handlers[:], root.level
    root.handlers, root.level = [handler], logging.INFO

    def log() -> list[str]:
        stream.seek(0), stream.truncate()
        logging.getLogger().info("Successfully loaded: 'fbgemm_gpu_py.so'")  # fbgemm logs on the root logger
        logging.getLogger("pytorch_lightning.utilities.rank_zero").info("GPU available: False, used: False")
        logging.getLogger("recframe.embedding").info("embedding kernels on cpu")
        logging.getLogger("lightning_fabric").warning("a library's warning")
        return stream.getvalue().splitlines()

    yield log
    root.handlers, root.level = saved


def test_other_libraries_info_lines_are_held_back_by_default(printed) -> None:  # noqa: ANN001
    configure_output(OmegaConf.create({"log_level": "WARNING"}), verbose=False)
    assert printed() == ["embedding kernels on cpu", "a library's warning"]


def test_lightning_imported_before_the_handlers_goes_through_them(printed) -> None:  # noqa: ANN001
    lightning = logging.getLogger("lightning_fabric")  # as Lightning leaves it, imported before Hydra's set-up
    own = logging.StreamHandler(io.StringIO())
    lightning.addHandler(own)
    lightning.propagate = False
    try:
        configure_output(OmegaConf.create({"log_level": "WARNING"}), verbose=False)
        assert own not in lightning.handlers and lightning.propagate
        assert printed() == ["embedding kernels on cpu", "a library's warning"]
    finally:
        lightning.removeHandler(own)
        lightning.propagate = True


def test_log_level_info_and_hydra_verbose_show_them(printed) -> None:  # noqa: ANN001
    every = ["Successfully loaded: 'fbgemm_gpu_py.so'", "GPU available: False, used: False",
             "embedding kernels on cpu", "a library's warning"]
    configure_output(OmegaConf.create({"log_level": "WARNING"}), verbose=False)
    configure_output(OmegaConf.create({"log_level": "info"}), verbose=False)  # a second job of a sweep: replaced
    assert printed() == every
    configure_output(OmegaConf.create({"log_level": "ERROR"}), verbose=True)
    assert printed() == every


def test_a_warning_is_shown_once_whatever_the_filters_do() -> None:
    shown: list[str] = []
    once = ShowOnce(lambda message, *args: shown.append(str(message)))
    for _ in range(2):
        once(FutureWarning("`isinstance(treespec, LeafSpec)` is deprecated"), FutureWarning, "_pytree.py", 21)
        once(UserWarning("another"), UserWarning, "data.py", 123)
    assert shown == ["`isinstance(treespec, LeafSpec)` is deprecated", "another"]


def test_an_unknown_log_level_is_a_config_problem() -> None:
    (problem,) = find_problems(["+experiment=dlrm", "log_level=INFOO"])
    assert (problem.key, problem.hint) == ("log_level", "did you mean 'INFO'?")
