"""Benchmark results files: JSON with the machine, a markdown table a person can read."""

from __future__ import annotations

import json

from bench.results_io import machine_description, machine_slug, markdown_table, write_results


def test_results_files_name_the_machine_and_hold_every_row(tmp_path):
    suites = {
        "transport": {
            "note": "two processes",
            "columns": ["size", "median_ms"],
            "rows": [{"size": "640x480", "median_ms": 3.25}, {"size": "1280x720", "median_ms": 6.5}],
        },
        "model": {"sections": {"parts": {"columns": ["part", "ms"], "rows": [{"part": "decoder", "ms": 1.5}]}}},
        "broken": {"error": "RuntimeError: no model"},
    }
    json_path, md_path = write_results(suites, "quick", out_dir=tmp_path)
    assert json_path.parent == tmp_path and json_path.name.endswith("-quick.json")
    assert json_path.name.startswith(machine_slug(machine_description()) + "-"), json_path.name
    payload = json.loads(json_path.read_text())
    assert payload["machine"]["cores"] >= 1 and payload["machine"]["cpu"]
    assert payload["suites"]["transport"]["rows"][1]["median_ms"] == 6.5
    text = md_path.read_text()
    assert "| 1280x720 | 6.5 |" in text and "### parts" in text and "**failed**: RuntimeError: no model" in text
    assert machine_description()["cpu"] in text


def test_markdown_table_formats_numbers_and_blanks():
    table = markdown_table([{"a": 1234.5678, "b": None}, {"a": 0.000123, "b": "x"}], ["a", "b"])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1235 |  |", "| 0.000123 | x |"]


def test_every_suite_bench_run_names_has_its_run_function():
    """``python -m bench.run`` calls ``run(quick, ...)`` of each suite module; a suite without one
    only fails when someone benchmarks (an edit once dropped the model suite's)."""
    import importlib
    import inspect

    from bench.run import SUITES

    for name, module in SUITES.items():
        run = getattr(importlib.import_module(module), "run", None)
        assert callable(run), f"{module} has no run(): `python -m bench.run --only {name}` fails"
        assert next(iter(inspect.signature(run).parameters)) == "quick", f"{module}.run must take quick first"
