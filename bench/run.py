"""Entry point of the benchmark suite (skeleton: the sluice-side runners come once the
server lands; see bench/raw.py and bench/peer.py for the baselines that exist now).

    python -m bench.run --quick|--full [--only simple,federated,pipeline,safety,peer]
"""

from __future__ import annotations

import argparse

SUITES = ("simple", "federated", "pipeline", "safety", "peer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--quick", action="store_true", help="small dataset, short runs")
    size.add_argument("--full", action="store_true", help="10M events, the figures we publish")
    parser.add_argument(
        "--only", default=",".join(SUITES), help="comma list of " + ",".join(SUITES)
    )
    args = parser.parse_args(argv)
    args.only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(args.only) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites {sorted(unknown)}; known: {', '.join(SUITES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise SystemExit(
        f"bench.run: suites {', '.join(args.only)} are not written yet; run the baselines with"
        " `python -m bench.raw` and `python -m bench.peer`"
    )


if __name__ == "__main__":
    main()
