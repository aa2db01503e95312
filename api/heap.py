"""The garbage collector, tuned for a server whose startup objects live forever.

A dashboard lookup at concurrency 1 had a p99 of tens of milliseconds: bench/gc_probe.py
showed full (generation 2) collections of 100k+ objects, each walking every module, sqlglot
table and cache built at startup. After startup those objects are moved to the permanent
generation (`gc.freeze()`), so a full collection walks only what requests created since,
and the youngest generation is collected less often (a lookup allocates a few hundred
container objects; 700 meant a collection every couple of requests). It stays small enough
that one young collection is well under a millisecond.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 5_000
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 10


def settle() -> None:
    """Call once the app has started: collect, freeze what survived, raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
