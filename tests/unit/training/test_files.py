"""metrics.json stays valid JSON: NaN and infinities are written as null, and the log names the keys."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recframe.training.files import write_json_atomic


def test_nan_and_infinities_are_null_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "metrics.json"
    with caplog.at_level(logging.WARNING, logger="recframe"):
        write_json_atomic(path, {"val/auc": 0.5, "val/ne": float("nan"), "val/logloss": float("inf"),
                                 "nested": {"x": [1.0, float("-inf")]}, "global_step": 3})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"val/auc": 0.5, "val/ne": None, "val/logloss": None, "nested": {"x": [1.0, None]},
                                "global_step": 3}
    assert "val/ne, val/logloss, nested.x[1] are not a finite number, written as null" in caplog.text
    caplog.clear()
    write_json_atomic(path, {"val/auc": 0.5})
    assert caplog.text == "" and json.loads(path.read_text()) == {"val/auc": 0.5}
