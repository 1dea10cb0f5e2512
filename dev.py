#!/usr/bin/env python3
"""Set up a virtualenv and run the project's jobs, needing nothing but Python.

python3 dev.py demo          # record an agent flow on SQLite, read it back, verify it
python3 dev.py test          # the whole suite, SQLite and PostgreSQL (EVENTSTORE_SOAK=1: soak too)
python3 dev.py bench         # the core benchmarks (see docs/benchmarks.md)
python3 dev.py bench-flows   # the flow command and rebuild benchmarks
python3 dev.py bench-langgraph  # EventStoreSaver against LangGraph's SQLite and PostgreSQL savers
python3 dev.py bench-timetravel # state at a revision of a 100k-event flow, diffs, verify
python3 dev.py bench-merkle     # signed checkpoints and proofs over 1M events
python3 dev.py bench-audit      # the audit questions on a log of 1M events
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("EVENTSTORE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXTRAS = {
    "demo": "",
    "test": "[dev]",
    "bench": "[dev,bench]",
    "bench-flows": "[dev,bench]",
    "bench-langgraph": "[dev,bench]",
    "bench-timetravel": "[dev,bench]",
    "bench-merkle": "[dev,bench]",
    "bench-audit": "[dev,bench]",
}
SCRIPTS = {
    "bench": "run.py",
    "bench-flows": "flows.py",
    "bench-langgraph": "langgraph.py",
    "bench-timetravel": "timetravel.py",
    "bench-merkle": "merkle.py",
    "bench-audit": "audit.py",
}


def ensure_venv(extras: str) -> None:
    stamp = VENV / f".installed{extras}"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    print(f"installing agent-eventstore{extras} into {VENV}", flush=True)
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}{extras}"], check=True)
    stamp.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EXTRAS:
        print(__doc__)
        return 2
    job, rest = argv[0], argv[1:]
    ensure_venv(EXTRAS[job])
    if job == "demo":
        command = [str(BIN / "eventstore"), "demo", *rest]
    elif job == "test":
        workers = os.environ.get("EVENTSTORE_TEST_WORKERS", "2")
        # Soak variants (marked slow) run only when asked: EVENTSTORE_SOAK=1.
        soak = [] if os.environ.get("EVENTSTORE_SOAK") == "1" else ["-m", "not slow"]
        command = [str(BIN / "python"), "-m", "pytest", "-n", workers, "--dist", "loadgroup", *soak, *rest]
    else:
        command = [str(BIN / "python"), str(ROOT / "benchmarks" / SCRIPTS[job]), *rest]
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
