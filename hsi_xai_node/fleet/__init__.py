"""Fleet scale: every bag of a fleet's recordings through the pipeline on Ray, local by default.

    from hsi_xai_node.fleet import run_fleet
    summary = run_fleet("recordings/", "fleet_out", workers=2)      # address="ray://head:10001" for a cluster

    run_fleet, FleetSummary    the run (fleet._run)
    find_bags, plan_shards     what is read and how it is cut (fleet._inputs)
    ShardStats                 what a shard measures per frame (fleet._stats)
"""

from ._inputs import BagInput, Shard, find_bags, plan_shards
from ._run import FleetSummary, run_fleet
from ._stats import ShardStats

__all__ = ["BagInput", "FleetSummary", "Shard", "ShardStats", "find_bags", "plan_shards", "run_fleet"]
