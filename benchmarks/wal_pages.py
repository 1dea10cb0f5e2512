"""Which pages a write changes on SQLite: WAL frames per LangGraph put and per flow command, by table.

    PYTHONPATH=. python benchmarks/wal_pages.py [--puts 40] [--flows 2]

In WAL mode a commit appends every page it changed to the WAL, one frame
(the page and a 24-byte header, written with its own calls) per page and
commit; at ``synchronous=FULL`` the commit then waits for them to reach the
disk. Pages per commit are what the cost of a small write follows once the
Python around it is gone (``flows_floor.py``, ``langgraph_floor.py``).

Each subject writes to a file of its own: a warm-up, then the WAL is emptied
(``wal_checkpoint(TRUNCATE)``) and automatic checkpoints are turned off on
its writing connection, then the measured writes. The page number of every
frame in the WAL is read from the file, and each page is named by SQLite's
``dbstat`` (the table or index it belongs to; page 1, the file's header,
belongs to ``sqlite_schema``). Subjects, on the same inputs:

* ``EventStoreSaver.put`` and LangGraph's ``SqliteSaver.put``: ``--puts``
  checkpoints of ``benchmarks/langgraph.py``'s agent thread, continuing a
  thread of 200.
* ``FlowService`` commands and the raw-driver baseline of
  ``benchmarks/flows.py``: ``--flows`` whole flows of 34 commands.

Figures are printed, never asserted on. Reading a store's writer connection
is a private attribute: this is a diagnostic.
"""

from __future__ import annotations

import argparse
import sqlite3
import struct
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # a script: the checkout importable, not benchmarks/langgraph.py as langgraph
    _here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from langgraph.checkpoint.sqlite import SqliteSaver

from benchmarks.flows import COMMANDS_PER_FLOW, Baseline, Ours, flow_commands
from benchmarks.langgraph import Step, agent_checkpoints
from benchmarks.scratch import Scratch
from eventstore.integrations.langgraph import EventStoreSaver

_FRAME_HEADER, _WAL_HEADER = 24, 32


def wal_pages(path: str) -> list[int]:
    """The page number of every frame in ``path``'s WAL, in order."""
    data = Path(path + "-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    pages, offset = [], _WAL_HEADER
    while offset + _FRAME_HEADER + page_size <= len(data):
        pages.append(struct.unpack(">I", data[offset : offset + 4])[0])
        offset += _FRAME_HEADER + page_size
    return pages


def by_owner(path: str, pages: list[int]) -> Counter[str]:
    """How many of ``pages`` belong to each table or index of ``path``."""
    with sqlite3.connect(path) as conn:
        owner = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    return Counter(owner.get(page, "(free list)") for page in pages)


def measured(path: str, conn: sqlite3.Connection, write: Callable[[], None]) -> Counter[str]:
    """Pages by owner that ``write`` put in the WAL, from an empty WAL, with no checkpoint between."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    write()
    return by_owner(path, wal_pages(path))


def _puts(saver: Any, steps: list[Step]) -> None:
    config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    for checkpoint, metadata, new_versions in steps:
        config = saver.put(config, checkpoint, metadata, new_versions)


def _writer(store: Any) -> sqlite3.Connection:
    return store._backend._writer.connection.dbapi_connection  # type: ignore[no-any-return]


def langgraph_puts(scratch: Scratch, puts: int) -> dict[str, Counter[str]]:
    steps = agent_checkpoints(200 + puts)
    warm, timed = steps[:200], steps[200:]
    ours_path, theirs_path = scratch.sqlite_path("ours_lg"), scratch.sqlite_path("theirs_lg")
    with EventStoreSaver.from_url(f"sqlite:///{ours_path}", synchronous="NORMAL") as ours:
        _puts(ours, warm)
        ours_pages = measured(ours_path, _writer(ours.store), lambda: _puts(ours, timed))
    conn = sqlite3.connect(theirs_path, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        theirs = SqliteSaver(conn)
        theirs.setup()
        _puts(theirs, warm)
        theirs_pages = measured(theirs_path, conn, lambda: _puts(theirs, timed))
    finally:
        conn.close()
    return {"EventStoreSaver.put": ours_pages, "SqliteSaver.put": theirs_pages}


def flow_commands_pages(scratch: Scratch, flows: int) -> dict[str, Counter[str]]:
    warm = [c for n in range(2) for c in flow_commands(n, "warm")]
    timed = [c for n in range(flows) for c in flow_commands(n, "timed")]
    ours_path, base_path = scratch.sqlite_path("ours_flows"), scratch.sqlite_path("base_flows")
    ours, baseline = Ours(ours_path), Baseline(base_path)
    try:
        for op in ours.prepare(warm):
            ours.apply(op)
        for command in warm:
            baseline.apply(command)
        ops = ours.prepare(timed)

        def ours_commands() -> None:
            for op in ops:
                ours.apply(op)

        def baseline_commands() -> None:
            for command in timed:
                baseline.apply(command)

        ours_pages = measured(ours_path, _writer(ours.store), ours_commands)
        base_pages = measured(base_path, baseline.conn, baseline_commands)
    finally:
        ours.close()
        baseline.close()
    return {"FlowService command": ours_pages, "baseline command": base_pages}


def show(title: str, results: dict[str, Counter[str]], writes: int) -> None:
    print(f"\n{title}: WAL frames per write ({writes} writes), by table or index")
    for subject, pages in results.items():
        print(f"  {subject:<24} {sum(pages.values()) / writes:6.1f}")
        for owner, count in pages.most_common():
            print(f"    {count / writes:6.2f}  {owner}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--puts", type=int, default=40, help="LangGraph puts measured (default 40)")
    parser.add_argument("--flows", type=int, default=2, help="flows of 34 commands measured (default 2)")
    args = parser.parse_args(argv)
    print(f"SQLite {sqlite3.sqlite_version}")
    with Scratch(None, None) as scratch:
        show("LangGraph puts", langgraph_puts(scratch, args.puts), args.puts)
        show("Flow commands", flow_commands_pages(scratch, args.flows), args.flows * COMMANDS_PER_FLOW)


if __name__ == "__main__":
    main()
