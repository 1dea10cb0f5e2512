"""The lock a rebuild holds for as long as its process lives: a claim's holder that died is known at once.

A rebuild's claim is a lease row (``checkpoints.claim``): a holder killed
with SIGKILL leaves it behind, and by the lease alone the next rebuild would
wait until it expires. So before it claims, a rebuild also takes a lock that
the operating system or the database server lets go of when its process or
connection dies (``eventstore.process_locks``, kind ``rebuild``, named for the
projection), and holds it until it has given the claim up:

* PostgreSQL: a session-level advisory lock on a connection of its own, its
  key derived from the projection's name and the schema the store works in.
* SQLite: ``flock`` on a file beside the database (``<database>-rebuild-<hash>.lock``),
  removed again when the rebuild ends.

A rebuild that holds the lock and finds a claim whose holder held it too
(``checkpoints.claim``) knows that holder is gone, and takes the claim over;
retention (``eventstore.retention``) asks the same lock whether such a
claim's holder lives before it refuses to prune. Where no lock can be had
(no ``fcntl``, a lock file that cannot be opened), the claim is written
unlocked and only its lease counts, as it does for a claim written by code
from before these locks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventstore import EventStore, process_locks
from eventstore.process_locks import ProcessLock
from eventstore.rebuild_claims import LOCK_KIND

if TYPE_CHECKING:
    from .declaration import Projection


RebuildLock = ProcessLock
"""What ``take`` got: ``held`` if this rebuild holds the lock (else there is none to hold)."""


def take(store: EventStore, projection: Projection) -> RebuildLock | None:
    """The projection's rebuild lock, or None if a live process holds it."""
    return process_locks.take(store, LOCK_KIND, projection.name)
