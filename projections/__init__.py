"""Read models folded from the event log (imports eventstore, never the reverse).

- ``FlowProjection``: the inline flow, step and session read models.
- ``FlowQueries``: questions over them; ``FlowService``: commands that append and update them.
- ``Projection``, ``CatchUpRunner``, ``rebuild``: the machinery for your own read models;
  ``retire``: drop one the code no longer has.
"""

from .catchup import CatchUpRunner
from .checkpoints import Checkpoint
from .declaration import Projection
from .flow_queries import FlowQueries, Page, Session
from .flows import FlowProjection
from .handover import make_catch_up
from .rebuilding import Progress, ensure, rebuild
from .retiring import Retirement, retire
from .service import FlowService, Lease

__all__ = [
    "CatchUpRunner",
    "Checkpoint",
    "FlowProjection",
    "FlowQueries",
    "FlowService",
    "Lease",
    "Page",
    "Progress",
    "Projection",
    "Retirement",
    "Session",
    "ensure",
    "make_catch_up",
    "rebuild",
    "retire",
]
