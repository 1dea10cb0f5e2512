"""The Merkle tree over the log as the database holds it: its leaves, and a cache of its subtrees.

The leaves are read by ``read_leaves`` alone: the chain hashes of the events
in position order, from ``flow_events`` and, for events retention has
pruned, ``pruned_events``. Complete, aligned subtrees of 256 leaves and more
are cached in ``merkle_subtrees`` (``fill_cache``, run as checkpoints are
taken), so a root or a proof over millions of events reads a few rows and
at most a few hundred leaves. ``checkpoints.py`` builds on this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import reconnecting
from .backends.base import driver_error
from .errors import IntegrityViolation
from .merkle import RootBuilder, Subtree, node_hash, root_hash, split_point
from .schema import merkle_subtrees

if TYPE_CHECKING:
    from .store import EventStore

CACHE_HEIGHT = 8
"""Subtrees of ``2**8`` = 256 leaves and larger are cached; smaller ones are hashed from the leaves."""
PAGE = 1 << 16
"""Leaves read per query when filling or checking the cache."""
_NODES_PER_TRANSACTION = 1 << 12  # cached subtrees written per transaction above the lowest cached height


_LEAVES = (
    "SELECT position, hash FROM flow_events WHERE position > ? AND position <= ? UNION ALL "
    "SELECT position, hash FROM pruned_events WHERE position > ? AND position <= ? ORDER BY position"
)


def _fetch(conn: sa.Connection, statement: str, params: tuple[Any, ...]) -> list[Any]:
    """Run a query on the driver's cursor, without SQLAlchemy's per-row result processing.

    Reading a million leaves through SQLAlchemy's rows cost half as much time
    as hashing them.

    ``statement`` uses ``?`` placeholders; a driver error is wrapped as
    SQLAlchemy would wrap it, for the store to translate.
    """
    if conn.dialect.paramstyle != "qmark":
        statement = statement.replace("?", "%s")
    raw: Any = conn.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        cursor.execute(statement, params)
        return list(cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, statement, params, cursor) from exc
    finally:
        cursor.close()


def read_leaves(conn: sa.Connection, start: int, stop: int) -> list[bytes]:
    """The leaves ``start .. stop - 1``: chain hashes of the events at positions ``start + 1 .. stop``.

    Taken from ``flow_events`` and ``pruned_events`` together, so a pruned
    event is still a leaf. Raises ``IntegrityViolation`` if a position is
    missing from both, or present twice.
    """
    if stop <= start:
        return []
    rows = _fetch(conn, _LEAVES, (start, stop, start, stop))
    if len(rows) == stop - start and all(row[0] == at for at, row in enumerate(rows, start + 1)):
        return [bytes(row[1]) for row in rows]
    expected = start + 1
    for position, _ in rows:
        if position < expected:
            raise IntegrityViolation(
                f"position {position} appears twice in the log (stored and pruned)", position=position
            )
        if position > expected:
            break
        expected += 1
    raise IntegrityViolation(
        f"position {expected} is missing from the log (neither stored nor pruned)", position=expected
    )


Span = tuple[int, int]


class LogTree:
    """``MTH(D[start:end])`` from the cached subtrees where they exist, else from the leaves.

    ``load`` fetches, in one query each, the cached subtrees and the leaves a
    list of spans needs; ``subtree`` then hashes from memory, and reads only
    what ``load`` did not foresee (a subtree missing from the cache).
    """

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._cached: dict[tuple[int, int], bytes] = {}
        self._absent: set[tuple[int, int]] = set()
        self._leaves: dict[int, bytes] = {}

    def load(self, spans: Sequence[Span]) -> None:
        nodes: set[tuple[int, int]] = set()
        leaf_spans: list[Span] = []
        for start, end in spans:
            self._plan(start, end, nodes, leaf_spans)
        found = cached_subtrees(self.conn, sorted(nodes))
        self._cached.update(found)
        self._absent.update(nodes - found.keys())
        for start, end in _merged(leaf_spans):
            self._leaves.update(enumerate(read_leaves(self.conn, start, end), start))

    def _plan(self, start: int, end: int, nodes: set[tuple[int, int]], leaf_spans: list[Span]) -> None:
        size = end - start
        if _cacheable(start, size):
            nodes.add((size.bit_length() - 1, start))
        elif size <= 1 << CACHE_HEIGHT:
            leaf_spans.append((start, end))
        else:
            k = split_point(size)
            self._plan(start, start + k, nodes, leaf_spans)
            self._plan(start + k, end, nodes, leaf_spans)

    def leaf(self, index: int) -> bytes:
        if index not in self._leaves:
            self.load([(index, index + 1)])
        return self._leaves[index]

    def subtree(self, start: int, end: int) -> bytes:
        size = end - start
        if _cacheable(start, size):
            key = (size.bit_length() - 1, start)
            if key not in self._cached and key not in self._absent:
                self.load([(start, end)])
            if key in self._cached:
                return self._cached[key]
            return self._streamed(start, end)  # not cached (yet): hash it from its leaves
        if size <= 1 << CACHE_HEIGHT:
            if not all(i in self._leaves for i in range(start, end)):
                self._leaves.update(enumerate(read_leaves(self.conn, start, end), start))
            return root_hash([self._leaves[i] for i in range(start, end)])
        k = split_point(size)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def _streamed(self, start: int, end: int) -> bytes:
        builder = RootBuilder()
        for page in range(start, end, PAGE):
            builder.extend(read_leaves(self.conn, page, min(end, page + PAGE)))
        return builder.root()


def _cacheable(start: int, size: int) -> bool:
    """A complete, aligned subtree of a height the cache holds."""
    return size >= 1 << CACHE_HEIGHT and size & (size - 1) == 0 and start % size == 0


def _merged(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def loaded_tree(
    conn: sa.Connection, build: Callable[[Subtree], object], leaves: Sequence[Span] = ()
) -> LogTree:
    """A tree with every hash ``build`` (a root or proof made of subtree hashes) asks for fetched at once."""
    wanted: list[Span] = list(leaves)

    def record(start: int, end: int) -> bytes:
        wanted.append((start, end))
        return bytes(32)

    build(record)  # a dry run, to learn which subtrees it needs
    tree = LogTree(conn)
    tree.load(wanted)
    return tree


def _insert_ignoring_duplicates(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(merkle_subtrees).on_conflict_do_nothing(), rows)


def _cached_end(conn: sa.Connection, height: int) -> int:
    """Where the cached subtrees of this height end (they are filled left to right)."""
    found = conn.execute(
        sa.select(sa.func.max(merkle_subtrees.c.start)).where(merkle_subtrees.c.height == height)
    ).scalar()
    return 0 if found is None else int(found) + (1 << height)


def fill_cache(store: EventStore, tree_size: int) -> None:
    """Cache every complete subtree of 256 leaves or more within the first ``tree_size`` leaves.

    Incremental: only subtrees not cached yet are computed, each page in a
    short transaction of its own. ``take_checkpoint`` calls it.
    """
    chunk = 1 << CACHE_HEIGHT
    with reading(store) as conn:
        done = _cached_end(conn, CACHE_HEIGHT)
    target = tree_size // chunk * chunk
    while done < target:
        stop = min(target, done + PAGE)
        with reading(store) as conn:
            leaves = read_leaves(conn, done, stop)
        rows = [
            {"height": CACHE_HEIGHT, "start": s, "hash": root_hash(leaves[s - done : s - done + chunk])}
            for s in range(done, stop, chunk)
        ]
        with reconnecting.transaction(store) as tx:
            _insert_ignoring_duplicates(tx.connection, rows)
        done = stop
    height = CACHE_HEIGHT + 1
    while tree_size >> height:
        _fill_height(store, height, tree_size >> height << height)
        height += 1


def _fill_height(store: EventStore, height: int, target: int) -> None:
    width, half = 1 << height, 1 << (height - 1)
    with reading(store) as conn:
        done = _cached_end(conn, height)
    while done < target:
        stop = min(target, done + _NODES_PER_TRANSACTION * width)
        c = merkle_subtrees.c
        with reading(store) as conn:
            children = dict(
                conn.execute(
                    sa.select(c.start, c.hash).where(c.height == height - 1, c.start >= done, c.start < stop)
                ).all()
            )
            rows = []
            for s in range(done, stop, width):
                left, right = children.get(s), children.get(s + half)
                if left is None or right is None:  # a gap in the cache: hash that subtree from below
                    digest = LogTree(conn).subtree(s, s + width)
                else:
                    digest = node_hash(bytes(left), bytes(right))
                rows.append({"height": height, "start": s, "hash": digest})
        with reconnecting.transaction(store) as tx:
            _insert_ignoring_duplicates(tx.connection, rows)
        done = stop


@contextmanager
def reading(store: EventStore) -> Iterator[sa.Connection]:
    """A read connection whose database errors become the store's errors."""
    with store.reading() as conn:  # the store's one translation of driver errors
        yield conn


def cached_subtrees(conn: sa.Connection, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The cached subtrees among these ``(height, start)`` keys."""
    c = merkle_subtrees.c
    found: dict[tuple[int, int], bytes] = {}
    for offset in range(0, len(keys), 500):
        wanted = keys[offset : offset + 500]
        rows = conn.execute(
            sa.select(c.height, c.start, c.hash).where(sa.tuple_(c.height, c.start).in_(wanted))
        ).all()
        found.update({(int(height), int(first)): bytes(digest) for height, first, digest in rows})
    return found
