"""A/B of two commits on one machine in one run: a benchmark suite in both source trees, alternately.

    python -m bench.ab --before <commit> [--suite model] [--rounds 2] [--quick]

The "before" tree is a git worktree of ``--before`` in a temporary directory; "after" is
this working tree. Each round runs the suite once in each tree (fresh processes, same
interpreter and packages, order alternating between rounds so drift on a shared machine
falls on both). Every numeric ``*_ms`` / ``*_hz`` / ``value`` cell of a row the two trees
share (same section, same first column) is reported as the median over rounds, with
after / before. Writes bench/results/<machine>-<date>-ab-<suite>.json + .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE_MODULES = {"model": "bench.model_bench"}
RUNNER = "import json, sys; from {module} import run; print('AB-RESULT ' + json.dumps(run({quick}{model})))"


def run_suite(tree: Path, module: str, quick: bool, model: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = RUNNER.format(module=module, quick=quick, model=f", model={model!r}" if model else "")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False, timeout=3600
    )
    for line in out.stdout.splitlines():
        if line.startswith("AB-RESULT "):
            return json.loads(line[len("AB-RESULT ") :])
    raise RuntimeError(f"{module} in {tree} failed ({out.returncode}): {out.stderr[-2000:]}")


def measurements(result: dict) -> dict[tuple[str, str, str], float]:
    """(section, row name, column) -> number, for the timing-like columns of every section."""
    found = {}
    for section, table in result.get("sections", {"": result}).items():
        for row in table.get("rows", []):
            name = str(next(iter(row.values())))
            for column, value in row.items():
                timing = column.endswith(("_ms", "_hz")) or column == "value"
                if timing and isinstance(value, (int, float)):
                    found[(section, name, column)] = float(value)
    return found


def compare(before: list[dict], after: list[dict]) -> list[dict]:
    b = [measurements(r) for r in before]
    a = [measurements(r) for r in after]
    rows = []
    for key in sorted(set.intersection(*map(set, b + a))):
        mb = statistics.median(m[key] for m in b)
        ma = statistics.median(m[key] for m in a)
        section, name, column = key
        rows.append(
            {
                "what": f"{section}: {name} [{column}]",
                "before": round(mb, 3),
                "after": round(ma, 3),
                "after_over_before": round(ma / mb, 3) if mb else None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    from bench.results_io import write_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="commit of the 'before' tree")
    parser.add_argument("--suite", choices=list(SUITE_MODULES), default="model")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--model", default="", help="one model (e.g. a bundle path) for both trees; default: each tree's own"
    )
    args = parser.parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    results: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="lens_ab_") as tmp:
        worktree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree), commit], cwd=ROOT, check=True)
        try:
            trees = {"before": worktree, "after": ROOT}
            for round_ in range(args.rounds):
                order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
                for side in order:
                    print(f"round {round_ + 1}/{args.rounds}: {side}", flush=True)
                    results[side].append(run_suite(trees[side], SUITE_MODULES[args.suite], args.quick, args.model))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    rows = compare(results["before"], results["after"])
    suite = {
        "note": (
            f"before = {commit}, after = the working tree; {args.rounds} rounds, order alternating; "
            f"median over rounds; suite {SUITE_MODULES[args.suite]} ({'quick' if args.quick else 'full'}); "
            f"model {args.model or 'the default of each tree'}."
        ),
        "columns": ["what", "before", "after", "after_over_before"],
        "rows": rows,
    }
    _, md = write_results({f"ab-{args.suite}": suite}, f"ab-{args.suite}")
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
