"""The period a run is for: one that has not started yet is refused, and the scheduler's never is."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time

from eventstore import EventStore, InvalidInput
from eventstore.maintenance import Job, Maintenance
from eventstore.maintenance_config import JobConfig, MaintenanceConfig

NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ADHOC = Job("adhoc", lambda ctx: {"period": ctx.period}, JobConfig())
"""A job without a schedule: its period is the moment it runs."""


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def rows(service: Maintenance) -> dict[str, Any]:
    return {row.name: row for row in service.status()}


class TestAPeriodNotStartedYet:
    @pytest.mark.parametrize(
        ("schedule", "current"),
        [({"every": 3600}, NOON), ({"cron": "15 4 * * *"}, datetime(2030, 1, 1, 4, 15, tzinfo=UTC))],
        ids=["interval", "cron"],
    )
    def test_is_refused_and_writes_nothing(
        self, store: EventStore, schedule: dict[str, Any], current: datetime
    ) -> None:
        config = MaintenanceConfig.parse({"jobs": {"integrity": schedule}})
        service = Maintenance(store, config, clock=at(NOON + timedelta(minutes=30)))
        assert service.period_of("integrity") == current
        for future in (datetime(2099, 1, 1, tzinfo=UTC), service.next_run_time("integrity")):
            assert future is not None
            refused = f"job 'integrity': period {future:%Y-%m-%dT%H:%M}.* has not started yet"
            with pytest.raises(InvalidInput, match=refused) as error:
                service.run_once("integrity", period=future)
            assert "now is 2030-01-01T12:30:00.000000Z" in str(error.value)
        assert "integrity" not in rows(service)
        assert service.run_once("integrity", period=current).status == "ok"  # the job was not put off

    def test_a_period_in_another_zone_is_compared_as_the_instant_it_is(self, store: EventStore) -> None:
        service = Maintenance(store, clock=at(NOON))
        tokyo = NOON.astimezone(ZoneInfo("Asia/Tokyo"))  # 21:00 there
        assert service.run_once("integrity", period=tokyo).status == "ok"
        with pytest.raises(InvalidInput, match="not started"):
            service.run_once("integrity", period=tokyo + timedelta(hours=1))

    def test_an_unscheduled_job_may_run_for_now_but_not_later(self, store: EventStore) -> None:
        service = Maintenance(store, jobs=[ADHOC], clock=at(NOON))
        with pytest.raises(InvalidInput, match=r"job 'adhoc': period 2030-01-01T12:00:00\.000001Z"):
            service.run_once("adhoc", period=NOON + timedelta(microseconds=1))
        assert "adhoc" not in rows(service)
        assert service.run_once("adhoc", period=NOON).status == "ok"

    def test_past_periods_are_still_labels_that_run_once(self, store: EventStore) -> None:
        service = Maintenance(store, clock=at(NOON))
        earlier = NOON - timedelta(days=400)
        assert service.run_once("integrity", period=earlier).status == "ok"
        assert service.run_once("integrity", period=earlier).status == "skipped"
        assert service.run_once("integrity", period=NOON).status == "ok"


class TestAPeriodOfTheWrongKind:
    @pytest.mark.parametrize("period", [datetime(2020, 1, 1), "2020-01-01T00:00:00Z", date(2020, 1, 1), 0])
    def test_is_refused_naming_what_a_period_must_be(self, store: EventStore, period: Any) -> None:
        service = Maintenance(store, clock=at(NOON))
        with pytest.raises(InvalidInput, match="job 'integrity': a period must be a timezone-aware datetime"):
            service.run_once("integrity", period=period)
        assert "integrity" not in rows(service)

    def test_a_naive_clock_is_refused_not_a_type_error(self, store: EventStore) -> None:
        service = Maintenance(store, clock=at(datetime(2030, 1, 1)))
        with pytest.raises(InvalidInput, match=r"timezone-aware.*check the store's clock"):
            service.run_once("integrity")
        assert "integrity" not in rows(service)


class TestScheduledRuns:
    """APScheduler 3 calls ``_fire(name)``, no time given: the period is taken from the clock's now."""

    @pytest.mark.parametrize("offset", [timedelta(0), timedelta(milliseconds=-3), timedelta(milliseconds=3)])
    def test_a_fire_at_or_a_few_ms_off_its_time_runs_for_the_period_it_is_in(
        self, store: EventStore, caplog: pytest.LogCaptureFixture, offset: timedelta
    ) -> None:
        service = Maintenance(store)
        with freeze_time(NOON + offset), caplog.at_level(logging.ERROR, logger="eventstore.maintenance"):
            service._fire("integrity")
        assert not caplog.records
        expected = NOON if offset >= timedelta(0) else NOON - timedelta(hours=1)
        assert rows(service)["integrity"].period == f"{expected:%Y-%m-%dT%H:%M:%S}.000000Z"

    def test_a_clock_stepped_back_during_a_fire_does_not_refuse_the_run(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        readings = iter([NOON, NOON - timedelta(milliseconds=1)])  # NTP steps the clock back mid-fire
        service = Maintenance(store, clock=lambda: next(readings, NOON))
        with caplog.at_level(logging.ERROR, logger="eventstore.maintenance"):
            service._fire("integrity")
        assert not caplog.records and rows(service)["integrity"].last_status == "ok"
