"""Benchmark results: one JSON file + a markdown table per run, named after the machine."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_description() -> dict:
    """What the numbers were measured on (CPU model, cores, memory, GPU if any)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "gpu": gpu,
        "python": platform.python_version(),
        # Timings are only comparable on a quiet machine: say how busy this one was.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "git_commit": _git_commit(),
    }


def machine_slug(desc: dict) -> str:
    kind = (desc.get("gpu") or f"cpu{desc['cores']}").lower()
    return "".join(c if c.isalnum() else "-" for c in kind).strip("-")


def _git_commit() -> str | None:
    """The checkout's commit; LENS_COMMIT where the tree was copied without its git directory."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or os.environ.get("LENS_COMMIT") or None
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("LENS_COMMIT") or None


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(suites: dict[str, dict], mode: str, out_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Write <machine>-<date>.json and .md. Each suite: {"rows": [...], "columns": [...], ...}."""
    desc = machine_description()
    stamp = _dt.datetime.now(_dt.UTC)
    # One file per machine, day and kind of run (full, quick, soak-30min, ...).
    name = f"{machine_slug(desc)}-{stamp:%Y-%m-%d}" + ("" if mode == "full" else f"-{mode}")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    payload = {"machine": desc, "mode": mode, "utc": stamp.isoformat(timespec="seconds"), "suites": suites}
    json_path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    parts = [
        f"# lens_ros benchmarks ({mode})",
        "",
        f"Machine: {desc['cpu']}, {desc['cores']} cores, {desc['memory_gib']} GiB"
        + (f", GPU {desc['gpu']}" if desc["gpu"] else ", no GPU")
        + f"; load average {desc['load_average_1min']}; commit {desc['git_commit']}; {payload['utc']}",
        "",
    ]
    for suite, result in suites.items():
        parts += [f"## {suite}", ""]
        if result.get("note"):
            parts += [result["note"], ""]
        if result.get("error"):
            parts += [f"**failed**: {result['error']}", ""]
        if result.get("rows"):
            parts += [markdown_table(result["rows"], result["columns"]), ""]
        for section, table in result.get("sections", {}).items():
            parts += [f"### {section}", "", markdown_table(table["rows"], table["columns"]), ""]
    md_path.write_text("\n".join(parts))
    return json_path, md_path
