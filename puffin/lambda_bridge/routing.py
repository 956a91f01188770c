"""Stable routing of fragments to a named function group, and which fragments may go at all.

Fragments reading the same file go to the same member of the group (a function name, or a name
and qualifier), so that file's bytes stay in the warm-partition cache of that member's instances
(as in Flock). A consistent-hash ring with virtual nodes means adding or removing a member moves
only about 1/n of the files.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

VNODES = 64


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, members: Sequence[tuple[str, str | None]], vnodes: int = VNODES):
        if not members:
            raise ValueError("a function group needs at least one member")
        self.members = tuple(members)
        points = sorted((_h(f"{name}:{qual or ''}#{i}"), k) for k, (name, qual) in enumerate(self.members)
                        for i in range(vnodes))
        self._keys = [p for p, _ in points]
        self._owners = [k for _, k in points]

    def member(self, key: str) -> tuple[str, str | None]:
        i = bisect.bisect(self._keys, _h(key)) % len(self._keys)
        return self.members[self._owners[i]]

    def route(self, fragment) -> tuple[str, str | None]:
        return self.member(routing_key(fragment))


def routing_key(fragment) -> str:
    """The file the fragment reads most of (by bytes); its stage and task when it reads none."""
    weight: dict[str, int] = {}
    for read in fragment.scans:
        for u in read.units:
            if u.path:
                weight[u.path] = weight.get(u.path, 0) + max(u.bytes, 1)
    if not weight:
        return f"stage{fragment.stage_id}/task{fragment.task}"
    return max(sorted(weight), key=weight.__getitem__)


def offloadable(fragment) -> tuple[bool, str]:
    """Whether a fragment can run on Lambda, and why not: a scan fragment (no exchange inputs)
    whose every read is an object-store file or an Iceberg table (nothing in driver memory, no
    local paths a function cannot see)."""
    if fragment.inputs:
        return False, "reads exchange inputs"
    if not fragment.scans:
        return False, "reads no table"
    for read in fragment.scans:
        if read.kind == "arrow":
            return False, f"{read.name} is an in-memory table"
        if read.kind != "iceberg" and read.storage is None:
            return False, f"{read.name} is on local disk"
        if read.kind == "iceberg" and any(not str(u.path).startswith(("s3://", "s3a://")) for u in read.units):
            return False, f"{read.name} has files outside S3"
    return True, "scan over S3"


def auto_offload(fragments: int, free_slots: int, factor: float) -> tuple[bool, str]:
    """The ``auto`` policy: offload a stage's scan fragments when they outnumber the free Ray
    slots by more than ``factor``; the reason is for EXPLAIN."""
    if fragments > factor * max(free_slots, 0):
        return True, f"{fragments} scan fragments > {factor:g} x {free_slots} free Ray slots"
    return False, f"{fragments} scan fragments fit {free_slots} free Ray slots (factor {factor:g})"
