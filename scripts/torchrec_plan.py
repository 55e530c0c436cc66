"""Plan a set of tables with TorchRec's EmbeddingShardingPlanner and write its plan as JSON (issue 24).

Run with the TorchRec venv (``bash ../shared/bench/setup_torchrec_venv.sh /tmp/torchrec-venv``); this
script does not import recframe:

    /tmp/torchrec-venv/bin/python scripts/torchrec_plan.py SPEC.json OUT.json

SPEC.json (written by ``scripts/compare_torchrec_plan.py`` from a recframe config)::

    {"world_size": 64, "local_world_size": 8, "batch_size": 8192, "hbm_gb": 80, "compute_device": "cuda",
     "optimizer": "rowwise_adagrad",
     "tables": [{"name": "t_cat_0", "rows": 40000000, "dim": 128, "features": ["cat_0"], "pooling_factors": [3.0]}]}

OUT.json: ``{"world_size", "local_world_size", "planner_seconds", "torchrec_version", "compute_device",
"tables": {name: {"sharding_type", "compute_kernel", "ranks", "shards": [{"rank", "offsets", "sizes"}]}}}``
(``ranks`` in shard order, offsets and sizes as ``[row, column]``). ``recframe.distributed.planner.torchrec_plan``
converts it into a recframe plan.

The planner runs on the CPU with ``compute_device`` from the spec: TorchRec 1.8's planner only does
arithmetic with it (storage, perf and comms estimates for that device), so ``cuda`` plans for GPUs on a
machine without any. The tables are built on the meta device (no memory).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torchrec
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

OPTIMIZERS = {"sgd": EmbOptimType.EXACT_SGD, "adagrad": EmbOptimType.EXACT_ADAGRAD,
              "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "adam": EmbOptimType.ADAM,
              "lamb": EmbOptimType.LAMB}
GB = 10**9


def plan_tables(spec: dict) -> dict:
    """TorchRec's plan of ``spec``'s tables as plain JSON data (see the module docstring).

    Args:
        spec: the parsed SPEC.json.
    """
    configs = [EmbeddingBagConfig(name=t["name"], embedding_dim=t["dim"], num_embeddings=t["rows"],
                                  feature_names=list(t["features"])) for t in spec["tables"]]
    ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
    topology = Topology(world_size=spec["world_size"], local_world_size=spec["local_world_size"],
                        compute_device=spec["compute_device"], hbm_cap=int(spec["hbm_gb"] * GB))
    constraints = {t["name"]: ParameterConstraints(pooling_factors=[float(p) for p in t["pooling_factors"]])
                   for t in spec["tables"]}
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=spec["batch_size"], constraints=constraints,
                                       debug=False)
    sharder = EmbeddingBagCollectionSharder(fused_params={"optimizer": OPTIMIZERS[spec["optimizer"]]})
    start = time.perf_counter()
    plan = planner.plan(ebc, [sharder])
    seconds = time.perf_counter() - start
    tables = {}
    for name, param in plan.plan[""].items():
        shards = sorted(param.sharding_spec.shards if param.sharding_spec is not None else [],
                        key=lambda s: tuple(s.shard_offsets))
        tables[name] = {"sharding_type": param.sharding_type, "compute_kernel": param.compute_kernel,
                        "ranks": list(param.ranks or []),
                        "shards": [{"rank": int(s.placement.rank()), "offsets": list(s.shard_offsets),
                                    "sizes": list(s.shard_sizes)} for s in shards]}
    return {"world_size": spec["world_size"], "local_world_size": spec["local_world_size"],
            "planner_seconds": seconds, "torchrec_version": torchrec.__version__,
            "compute_device": spec["compute_device"], "tables": tables}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    result = plan_tables(json.loads(args.spec.read_text()))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    kinds: dict[str, int] = {}
    for t in result["tables"].values():
        kinds[t["sharding_type"]] = kinds.get(t["sharding_type"], 0) + 1
    print(f"world {result['world_size']}: planned in {result['planner_seconds']:.1f} s: {kinds}")


if __name__ == "__main__":
    main()
