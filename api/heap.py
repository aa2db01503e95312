"""The garbage collector, tuned for a server whose startup objects live forever.

A dashboard lookup at concurrency 1 had a p99 of tens of milliseconds: bench/gc_probe.py
showed full (generation 2) collections of 100k+ objects, each walking every module, sqlglot
table and cache built at startup. After startup those objects are moved to the permanent
generation (`gc.freeze()`), so a full collection walks only what requests created since,
and the youngest generation is collected less often (a lookup allocates a few hundred
container objects; 700 meant a collection every couple of requests).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 20


def settle() -> None:
    """Call once the app has started: collect, freeze what survived, raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
