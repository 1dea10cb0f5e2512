"""``EventStoreSaver``: a LangGraph checkpointer whose history is the event log.

    from eventstore.integrations.langgraph import EventStoreSaver

    with EventStoreSaver.from_url("sqlite:///checkpoints.db") as saver:
        graph = builder.compile(checkpointer=saver)

Every ``put`` appends a ``CheckpointSaved`` event and every ``put_writes`` a
``WritesSaved`` (``InterruptRecorded``, ``ResumeRecorded``) event to the
thread's flow (``eventstore.graph_checkpoints.flow_id_for``), hash-chained,
with the actor and time. The inline read model ``projections.langgraph``
answers ``get_tuple`` and ``list`` without replaying anything. Channel values
are stored once per ``(channel, version)``: an event carries only the values
that changed.

Deleting (``delete_thread``, ``delete_for_runs``, ``prune``) removes
checkpoints from the saver's view and appends an event that says who deleted
what; the events before it stay in the log, which is append-only.

The async methods never block the event loop. On PostgreSQL they are native
by default: the same code runs on SQLAlchemy's async engine (psycopg's async
connections) through ``eventstore.aio``; on SQLite each call runs in a worker
thread, or natively on aiosqlite with ``async_driver=True``.
docs/langgraph.md has the details.

The package, by idea:

* ``saver``: ``EventStoreSaver`` itself: opening, closing, and the async
  methods, which run the sync ones on the event loop or in a worker thread;
* ``sync``: the sync reads and writes (``get_tuple``, ``list``, ``put``,
  ``put_writes``, ``threads``) and the transactions they run in;
* ``retention``: ``delete_thread``, ``delete_for_runs``, ``copy_thread``,
  ``prune``;
* ``importing``: ``import_checkpoints``, moving another saver's threads in;
* ``encoding``: which values are stored as plain JSON, which through the serde;
* ``config``: the ids a LangGraph config names, and the checks of arguments.
"""

from __future__ import annotations

from ...graph_checkpoints import flow_id_for
from .importing import IMPORT_ACTOR, ImportedCheckpoints, import_checkpoints
from .retention import PRUNE_STRATEGIES as PRUNE_STRATEGIES
from .saver import DEFAULT_ACTOR, EventStoreSaver
from .saver import DEFAULT_MAX_PAYLOAD_BYTES as DEFAULT_MAX_PAYLOAD_BYTES

__all__ = [
    "DEFAULT_ACTOR",
    "IMPORT_ACTOR",
    "EventStoreSaver",
    "ImportedCheckpoints",
    "flow_id_for",
    "import_checkpoints",
]
