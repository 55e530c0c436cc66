"""TorchRec's plan (the JSON of scripts/torchrec_plan.py) converted into a recframe plan: each sharding type mapped,
without torchrec (a fixture written by hand in that format)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from recframe.distributed.planner.torchrec_plan import from_torchrec, torchrec_spec
from recframe.embedding.config import TableConfig

FIXTURE = Path(__file__).parent / "plans" / "torchrec_plan_4ranks.json"
SHAPES = {"tw": (100, 8), "rw": (100, 8), "rw_padded": (3, 8), "twrw": (100, 8), "cw": (100, 8), "twcw": (100, 8),
          "dp": (100, 8)}


def test_every_sharding_type_maps_onto_recframe_s() -> None:
    plan = from_torchrec(json.loads(FIXTURE.read_text()))
    got = {name: (str(p.sharding_type), p.ranks, p.shard_sizes) for name, p in plan.tables.items()}
    assert got == {
        "tw": ("table_wise", [3], None),
        "rw": ("row_wise", [0, 1, 2, 3], [26, 26, 26, 22]),  # shards in row order
        "rw_padded": ("row_wise", [0, 1, 2], [1, 1, 1]),  # TorchRec's empty last block dropped
        "twrw": ("table_row_wise", [2, 3], [50, 50]),
        "cw": ("column_wise", [1, 0], [4, 4]),  # rank 0's two adjacent column blocks merged
        "twcw": ("column_wise", [0, 1], [4, 4]),
        "dp": ("data_parallel", [0, 1, 2, 3], None),
    }
    assert plan.world_size == 4
    assert plan.problems(SHAPES) == []
    assert plan.group_problems(SHAPES, 4, 2) == []


def test_what_recframe_cannot_run_is_refused() -> None:
    data = json.loads(FIXTURE.read_text())
    grid = copy.deepcopy(data)
    grid["tables"]["tw"]["sharding_type"] = "grid_shard"
    with pytest.raises(ValueError, match="grid_shard"):
        from_torchrec(grid)
    apart = copy.deepcopy(data)
    apart["tables"]["cw"]["shards"][2]["rank"] = 1  # rank 1 holds columns 0-3 and 6-7, not adjacent
    with pytest.raises(ValueError, match="not adjacent"):
        from_torchrec(apart)


def test_the_spec_carries_pooling_factors_per_feature() -> None:
    shared = TableConfig(name="s", num_embeddings=10, embedding_dim=4, feature_names=["a", "b"])
    spec = torchrec_spec([shared], {"a": 3.0, "b": 1.0}, 16, 8, 512, 80.0, "rowwise_adagrad")
    assert spec["tables"][0]["pooling_factors"] == [3.0, 1.0] and spec["local_world_size"] == 8
    assert spec["compute_device"] == "cuda" and spec["hbm_gb"] == 80.0
