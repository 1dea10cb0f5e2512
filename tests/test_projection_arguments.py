"""What ``CatchUpRunner`` and ``rebuild`` do with arguments of the wrong kind: refuse them at the call."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from eventstore import EventStore
from eventstore.errors import InvalidInput
from projections import CatchUpRunner, rebuild

from .test_projections import DecisionsByActor, counts, decide


def _tables(store: EventStore) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(name for name in sa.inspect(conn).get_table_names() if "decisions" in name)


def test_a_progress_that_is_not_callable_is_refused_before_the_rebuild(store: EventStore) -> None:
    """It failed with a TypeError at the first batch, the fresh tables built and left behind."""
    decide(store, "a", 2)
    runner = CatchUpRunner(store, DecisionsByActor())
    with pytest.raises(InvalidInput, match="progress must be callable or None, not 'x'"):
        rebuild(store, DecisionsByActor(), progress="x")  # type: ignore[arg-type]  # the wrong kind on purpose
    assert _tables(store) == ["decisions_by_actor"]
    assert counts(store, runner.projection) == {"a": 2}


@pytest.mark.parametrize("flag", ["wait", "only_if_outdated"])
def test_a_flag_that_is_not_a_bool_is_refused(store: EventStore, flag: str) -> None:
    """``only_if_outdated="no"`` meant yes: the rebuild asked for was skipped without a word."""
    decide(store, "a", 2)
    CatchUpRunner(store, DecisionsByActor())
    with pytest.raises(InvalidInput, match=f"{flag} must be True or False, not 'no'"):
        rebuild(store, DecisionsByActor(), **{flag: "no"})


@pytest.mark.parametrize("patience", [0, -1, True, "10", float("nan")])
def test_a_patience_that_is_not_seconds_above_zero_is_refused(store: EventStore, patience: Any) -> None:
    decide(store, "a", 2)
    runner = CatchUpRunner(store, DecisionsByActor())
    with pytest.raises(InvalidInput, match="patience must be a number of seconds above 0"):
        rebuild(store, DecisionsByActor(), patience=patience)
    assert _tables(store) == ["decisions_by_actor"]
    assert counts(store, runner.projection) == {"a": 2}


@pytest.mark.parametrize(
    ("projection", "shown"),
    [(DecisionsByActor, "the class DecisionsByActor: pass an instance"), (None, "None"), ("x", "'x'")],
    ids=["class", "none", "str"],
)
def test_what_is_not_a_projection_is_refused(store: EventStore, projection: Any, shown: str) -> None:
    decide(store, "a")
    message = f"projection must be a projections.Projection, not {shown}"
    with pytest.raises(InvalidInput, match=message):
        CatchUpRunner(store, projection)
    with pytest.raises(InvalidInput, match=message):
        rebuild(store, projection)


def test_what_is_not_a_store_is_refused(store: EventStore) -> None:
    with pytest.raises(InvalidInput, match="store must be an EventStore, not 'x'"):
        CatchUpRunner("x", DecisionsByActor())  # type: ignore[arg-type]  # the wrong kind on purpose
    with pytest.raises(InvalidInput, match="store must be an EventStore, not 'x'"):
        rebuild("x", DecisionsByActor())  # type: ignore[arg-type]  # the wrong kind on purpose
