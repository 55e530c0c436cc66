"""Model parallelism: sharding plans, the planner, all-to-all communication, sharded modules."""
