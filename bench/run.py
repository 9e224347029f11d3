"""Run lens_ros's benchmarks and write bench/results/<machine>-<date>.json + .md.

    python -m bench.run --quick          # CI smoke: few iterations, still real numbers
    python -m bench.run                  # full numbers
    python -m bench.run --only transport

Every suite compares against a baseline measured in the same run on the same machine
and reports ratios; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback

# suite name -> module with run(quick: bool) -> {"columns": [...], "rows": [...], "note": str}
SUITES = {
    "model": "bench.model_bench",
    "ros": "bench.ros_bench",
    "transport": "bench.transport",
}


def main(argv: list[str] | None = None) -> int:
    from bench.results_io import write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations (CI smoke)")
    parser.add_argument("--only", nargs="*", choices=list(SUITES), help="run these suites only")
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    failed = 0
    for name in args.only or SUITES:
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            results[name] = importlib.import_module(SUITES[name]).run(args.quick)
        except Exception as exc:  # one broken suite must not hide the others' numbers
            failed += 1
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds"] = round(time.monotonic() - start, 1)
    json_path, md_path = write_results(results, "quick" if args.quick else "full")
    print(md_path.read_text())
    print(f"results: {json_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
