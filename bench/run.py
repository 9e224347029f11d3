"""Run lens_ros's benchmarks and write bench/results/<machine>-<date>.json + .md.

    python -m bench.run --quick          # CI smoke: few iterations, still real numbers
    python -m bench.run                  # full numbers
    python -m bench.run --only transport
    python -m bench.run --only training --device cuda   # training throughput on a GPU

Every suite compares against a baseline measured in the same run on the same machine
and reports ratios; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import time
import traceback

# suite name -> module with run(quick: bool[, device: str]) -> {"columns": [...], "rows": [...], "note": str}
SUITES = {
    "model": "bench.model_bench",
    "ros": "bench.ros_bench",
    "transport": "bench.transport",
    "training": "bench.training_bench",
    "console": "bench.console_bench",
}


def main(argv: list[str] | None = None) -> int:
    from bench.results_io import write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations (CI smoke)")
    parser.add_argument("--only", nargs="*", choices=list(SUITES), help="run these suites only")
    parser.add_argument("--device", default="cpu", help="torch device for the suites that take one (training)")
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    failed = 0
    for name in args.only or SUITES:
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            run = importlib.import_module(SUITES[name]).run
            kwargs = {"device": args.device} if "device" in inspect.signature(run).parameters else {}
            results[name] = run(args.quick, **kwargs)
        except Exception as exc:  # one broken suite must not hide the others' numbers
            failed += 1
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds"] = round(time.monotonic() - start, 1)
    mode = "quick" if args.quick else "full"
    if args.only:  # a partial run must not overwrite the day's results of all suites
        mode = "-".join([*args.only, *([mode] if args.quick else [])])
    if args.device != "cpu":
        mode += f"-{args.device.replace(':', '')}"
    json_path, md_path = write_results(results, mode)
    print(md_path.read_text())
    print(f"results: {json_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
