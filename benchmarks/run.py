"""Run every benchmark and write benchmarks/RESULTS.md (ratios measured side by side).

    make bench                          # all of them
    python benchmarks/run.py kl_step    # some of them (their sections are replaced, the rest kept)

Each benchmark is a script `benchmarks/<name>.py` whose `--markdown` run prints its own
section of RESULTS.md (a `## ` heading, what was measured, the baseline, the ratios, how to
rerun it alone) and nothing else on stdout.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
BENCHMARKS = [
    "kl_step",
    "vs_trl",
    "study",
    "generation",
    "vs_generate",
    "judging",
    "sweeps",
    "importance",
]
"""Run in this order; a section per script."""
GPU_BENCHMARKS = ["gpu_step"]
"""Need a CUDA device: run by name on a GPU machine (`python benchmarks/run.py gpu_step`), never by
`make bench`."""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"
    )


def section(name: str) -> str:
    """The Markdown section printed by `benchmarks/<name>.py --markdown`."""
    out = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), "--markdown"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"<!-- {name} -->\n{out.stdout.strip()}\n<!-- /{name} -->"


def kept_sections() -> dict[str, str]:
    """Sections already in RESULTS.md, by benchmark name."""
    if not RESULTS.exists():
        return {}
    text = RESULTS.read_text()
    return {
        m.group(1): m.group(0)
        for m in re.finditer(r"<!-- (\w+) -->.*?<!-- /\1 -->", text, flags=re.S)
    }


def main(names: list[str]) -> None:
    unknown = set(names) - set(BENCHMARKS) - set(GPU_BENCHMARKS)
    if unknown:
        raise SystemExit(
            f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS + GPU_BENCHMARKS}"
        )
    sections = kept_sections()
    for name in names or BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        sections[name] = section(name)
    text = (
        "\n\n".join(
            [
                "# Benchmarks",
                (
                    f"Last written {time.strftime('%Y-%m-%d')} on {machine()}. Rerun all: `make"
                    " bench`; one: `python benchmarks/run.py NAME`. Every ratio is measured side"
                    " by side in one run against the baseline its section names; absolute times on"
                    " this shared machine are noisy, ratios much less so."
                ),
                *(sections[n] for n in BENCHMARKS + GPU_BENCHMARKS if n in sections),
            ]
        )
        + "\n"
    )
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
