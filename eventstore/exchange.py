"""Export a flow, a session, a time range or the whole log from a store; import an export into one.

The names users import from here, kept where they always were: exporting
lives in ``exporting.py``, importing in ``importing.py``, the file format
and its check from the files alone in ``exportfile.py`` (docs/exchange.md
describes all three).
"""

from __future__ import annotations

from .exporting import export_events, export_flows, refuse_own_files
from .importing import Completion, Head, ImportReport, flow_heads, import_events, run_import

__all__ = [
    "Completion",
    "Head",
    "ImportReport",
    "export_events",
    "export_flows",
    "flow_heads",
    "import_events",
    "refuse_own_files",
    "run_import",
]
