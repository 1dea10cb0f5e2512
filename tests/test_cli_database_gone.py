"""A command whose PostgreSQL server goes away mid-run says so in one line, without a pool traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eventstore import NewEvent

from .conftest import Target
from .workers import BARRIER_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent

GONE_BETWEEN_PAGES = """
import sys
from eventstore.backends import base
from eventstore.cli import main
from tests.tcp_proxy import tcp_proxy

url, out, *schema = sys.argv[1:]
with tcp_proxy(url) as proxy:
    give_back = base.give_back

    def gone_first(conn):  # the server goes away after a page was read, before the connection is back
        if not conn.in_transaction():  # a page read on the driver's cursor: the pool rolls it back
            proxy.down()
        give_back(conn)

    base.give_back = gone_first
    main(["--url", proxy.route(url), *(["--schema", *schema] if schema else []), "export", out])
"""


def test_the_server_gone_between_two_pages_is_one_error_line(pg_target: Target, tmp_path: Path) -> None:
    """The pool's rollback-on-return fails on the dead connection, and SQLAlchemy logs "Exception
    during reset or similar" with a traceback, which Python's last-resort handler wrote to the
    terminal of a command that configures no logging, above the command's own error line."""
    with pg_target.open() as store:
        store.append("f", [NewEvent("Noted", {"n": n}) for n in range(3)])
    schema = [pg_target.options["schema"]] if "schema" in pg_target.options else []
    done = subprocess.run(
        [sys.executable, "-c", GONE_BETWEEN_PAGES, pg_target.url, str(tmp_path / "out.jsonl"), *schema],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=BARRIER_TIMEOUT,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Exception during reset" not in done.stderr, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if not line.startswith("exporting: ")]
    assert line.startswith("error: PostgreSQL error: connection failed: ")  # the next read: none opens
