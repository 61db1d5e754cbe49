"""The benchmark (bench/) keeps working: its smoke run end to end, and the report's side-by-side table.

Nothing here is timed: the smoke run checks that every scenario runs against the real relay with zero
errors, not how fast it is (that is bench/README.md's business, on a quiet machine).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(240)
def test_the_smoke_run_measures_every_scenario_without_errors(tmp_path):
    finished = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                              capture_output=True, text=True, timeout=220, check=False)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    [results_file] = tmp_path.glob("*.json")
    results = json.loads(results_file.read_text())
    assert set(results["scenarios"]) == {"unary_c1", "unary_c8", "sse", "image_20mb", "upload_30mb", "hold"}
    for name, scenario in results["scenarios"].items():
        assert scenario["relay"]["errors"] == 0, (name, scenario["relay"])
    assert results["scenarios"]["sse"]["relay"]["coalesced"] == 0
    markdown = next(tmp_path.glob("*.md")).read_text()
    assert "| **relay** |" in markdown and "## Targets" in markdown


def unary(rps, p50):
    return {"rps": rps, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0}


def test_the_report_sets_relay_beside_the_bare_framework():
    plan = {"concurrency": [1, 64]}
    results = {"scenarios": {
        "unary_c64": {"floor": unary(70000, 0.7), "stack": unary(1800, 30), "relay": unary(1900, 31),
                      "litellm": unary(150, 400), "litellm-passthrough": unary(200, 250)},
        "unary_c1": {"floor": unary(13000, 0.07), "stack": unary(1000, 0.94), "relay": unary(1100, 0.87)},
        "sse": {"floor": {"ttfe_p50_ms": 0.4}, "stack": {"ttfe_p50_ms": 2.7}, "relay": {"ttfe_p50_ms": 2.5}},
    }}
    rows = report.framework_rows(results, plan)
    assert rows == [
        ["unary c=64 req/s (× LiteLLM's best route)", "1800 (9.0x)", "1900 (9.5x)"],
        ["unary c=1 added p50 ms", 0.87, 0.8],
        ["SSE added time-to-first-event p50 ms", 2.3, 2.1],
    ]


def test_without_a_stack_target_the_report_has_no_side_by_side_table():
    results = {"scenarios": {"unary_c1": {"floor": unary(13000, 0.07), "relay": unary(1100, 0.87)}}}
    assert report.framework_rows(results, {"concurrency": [1]}) == []
