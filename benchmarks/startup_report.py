"""Part 5 in the report: start-up and memory checked against the floor measured in the same
run, and the start-up section of bench.md (report.py puts them in)."""

from __future__ import annotations

from typing import Any

from report_common import Check, table
from startup import ANSWERED_WITHOUT_TORCH

#: the commands that must answer before torch loads, within this many seconds
INSTANT_S = 1.0
#: what start-up may add to the bare ``import torch, lightning``, in seconds
OVER_FLOOR_S = 1.5


def over_floor(name: str, seconds: float, floor: float) -> Check:
    """``seconds`` against the floor: what the project adds may be at most ``OVER_FLOOR_S``."""
    return Check(
        f"{name}, over the floor",
        f"{seconds - floor:+.2f} s ({seconds:.2f} s)",
        f"<= +{OVER_FLOOR_S:g} s",
        seconds - floor <= OVER_FLOOR_S,
    )


def startup_checks(startup: dict[str, Any], default_run: dict[str, Any]) -> list[Check]:
    """Start-up and memory against the floor measured in the same run."""
    floor = startup["floor"]["import torch, lightning"]["median_s"]
    commands = {name: c["median_s"] for name, c in startup["commands"].items()}
    found = [
        Check(f"`python {name}`", f"{seconds:.2f} s", f"<= {INSTANT_S:g} s", seconds <= INSTANT_S)
        for name, seconds in commands.items()
        if name in ANSWERED_WITHOUT_TORCH
    ]
    ckpt = commands["predict.py on the checkpoint, one image"]
    found.append(over_floor("`predict.py` on the checkpoint, one image", ckpt, floor))
    first_step = default_run.get("startup_s")
    if first_step is not None:
        name = "launch to the first training step (default run)"
        found.append(over_floor(name, first_step, floor))
    first_steps = startup.get("fast_dev_run_startup_s")
    if first_steps is not None:
        found.append(
            Check(
                "launch to the first training step, `debug=fast_dev_run` (median)",
                f"{first_steps:.2f} s",
                "<= 4 s (aimed)",
                first_steps <= 4.0,
            )
        )
    fast_dev_run = commands["train.py debug=fast_dev_run"]
    found.append(
        Check("`train.py debug=fast_dev_run`, wall", f"{fast_dev_run:.2f} s", "<= 6 s (aimed)",
              fast_dev_run <= 6.0)
    )  # fmt: skip
    added = (default_run["peak_rss_bytes"] - startup["floor_peak_rss_bytes"]) / 1e6
    found.append(
        Check(
            "peak RSS the project adds to a bare `import torch, lightning` (1-epoch default run)",
            f"{added:.0f} MB",
            "< 250 MB",
            added < 250,
        )
    )
    return found


def startup_section(startup: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """Part 5: the floor and each command, wall seconds (median), and the memory beside it."""
    repeats = startup["repeats"]
    lines = ["", f"## Start-up (wall seconds of the whole process, median of {repeats})", ""]
    rows = [
        [f'floor: `python -c "{name}"`', f"{f['median_s']:.2f} s", ""]
        for name, f in startup["floor"].items()
    ]
    rows += [
        [f"`python {name}`", f"{c['median_s']:.2f} s", ",".join(map(str, c["exit_codes"]))]
        for name, c in startup["commands"].items()
    ]
    if run.get("startup_s") is not None:
        rows.append(
            [
                "launch to the first training step of the 1-epoch default run (`metrics.json`: "
                "`startup_seconds`)",
                f"{run['startup_s']:.2f} s",
                "0",
            ]
        )
    if startup.get("fast_dev_run_startup_s") is not None:
        rows.append(
            [
                f"the same in `debug=fast_dev_run` (no sanity-check validation first; median of"
                f" {repeats})",
                f"{startup['fast_dev_run_startup_s']:.2f} s",
                "0",
            ]
        )
    lines += table(["command", "wall", "exit code"], rows, {1, 2})
    floor_rss = startup["floor_peak_rss_bytes"]
    lines += [
        "",
        f"Peak RSS: bare `import torch, lightning` {floor_rss / 1e6:,.0f} MB; the 1-epoch default "
        f"run {run['peak_rss_bytes'] / 1e6:,.0f} MB; the project adds "
        f"{(run['peak_rss_bytes'] - floor_rss) / 1e6:,.0f} MB.",
    ]
    return lines
