"""Read models folded from the event log (imports eventstore, never the reverse)."""
