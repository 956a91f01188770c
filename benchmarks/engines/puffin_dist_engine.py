"""Puffin with its distributed plans on one node too (``config={"one_task_bytes": 0}``).

On a one-node cluster Puffin runs each query over local files as one DuckDB task on all the
node's cores (``puffin``). This configuration keeps the stages, exchanges and Ray tasks a
multi-node cluster would run, so their overhead stays measured side by side.
"""

from __future__ import annotations

from benchmarks.engines.puffin_engine import Engine as PuffinEngine


class Engine(PuffinEngine):
    def __init__(self, plan_cache: bool = True, **kwargs) -> None:
        super().__init__(plan_cache=plan_cache, **kwargs)
        options = {} if plan_cache else {"plan_cache": False}
        tp = kwargs.get("target_partitions")
        self.con = self.puffin.connect(config={"one_task_bytes": 0}, target_partitions=tp, **options)
