"""`sluice` with every garbage collection timed: where a lookup's tail comes from.

    python -m bench.gc_probe OUT.json serve --config sluice.yaml --port 8787

Runs sluice's CLI in this process with a gc callback that times each collection by
generation; on SIGTERM/exit it writes counts, total and worst pauses and the objects tracked
to OUT.json. Collections before the server freezes its startup heap (api/heap.py) are not
counted: they happen before the first request. Use with one hypercorn worker (in process).
"""

from __future__ import annotations

import atexit
import gc
import json
import signal
import sys
import time
from pathlib import Path

PAUSES: dict[int, list[float]] = {0: [], 1: [], 2: []}
_started: list[float] = [0.0]
_freeze = gc.freeze


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        PAUSES[info["generation"]].append(time.perf_counter() - _started[0])


def _frozen() -> None:
    """The server froze its startup heap: count only the collections after it."""
    _freeze()
    for pauses in PAUSES.values():
        pauses.clear()


def summary() -> dict[str, object]:
    out: dict[str, object] = {"objects_tracked": len(gc.get_objects())}
    for gen, pauses in PAUSES.items():
        ms = sorted(p * 1000 for p in pauses)
        out[f"gen{gen}"] = {
            "count": len(ms),
            "total_ms": round(sum(ms), 1),
            "max_ms": round(ms[-1], 2) if ms else 0.0,
            "over_5ms": sum(1 for p in ms if p > 5),
        }
    out["thresholds"] = gc.get_threshold()
    return out


def main() -> None:
    out = Path(sys.argv[1])
    gc.callbacks.append(_on_gc)
    gc.freeze = _frozen

    def write() -> None:
        out.write_text(json.dumps(summary(), indent=1))

    atexit.register(write)
    signal.signal(signal.SIGUSR1, lambda *_: write())
    from sluice.cli import main as cli

    sys.argv = ["sluice", *sys.argv[2:]]
    cli()


if __name__ == "__main__":
    main()
