"""A foreign key between a projection's own tables survives its builds and rebuilds, on every backend."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from eventstore import EventStore, NewEvent, RecordedEvent, Transaction
from eventstore.errors import ProjectionError, StorageError
from projections import Projection, rebuild

from .conftest import Target


class Shop(Projection):
    """Customers and their orders: an order's key points at its customer, and goes with it."""

    name: ClassVar[str] = "shop"
    kind: ClassVar[str] = "inline"
    deferred: ClassVar[bool] = False
    ondelete: ClassVar[str | None] = "CASCADE"

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("shop_customers", metadata, sa.Column("customer", sa.String(50), primary_key=True))
        key = sa.ForeignKey("shop_customers.customer", ondelete=self.ondelete, **self.timing())
        sa.Table(
            "shop_orders",
            metadata,
            sa.Column("order_id", sa.String(50), primary_key=True),
            sa.Column("customer", sa.String(50), key, nullable=False),
        )

    @classmethod
    def timing(cls) -> dict[str, Any]:
        return {"deferrable": True, "initially": "DEFERRED"} if cls.deferred else {}

    def on_CustomerJoined(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table("shop_customers").insert().values(customer=event.flow_id))

    def on_OrderPlaced(self, tx: Transaction, event: RecordedEvent) -> None:
        orders = self.table("shop_orders")
        tx.connection.execute(orders.insert().values(order_id=event.data["order"], customer=event.flow_id))

    def on_CustomerLeft(self, tx: Transaction, event: RecordedEvent) -> None:
        customers = self.table("shop_customers")
        tx.connection.execute(customers.delete().where(customers.c.customer == event.flow_id))


class DeferredShop(Shop):
    deferred: ClassVar[bool] = True


class StrictShop(Shop):
    """Its customers cannot go while they have orders."""

    ondelete: ClassVar[str | None] = None


class CustomersOnly(Shop):
    """A next version of ``Shop`` that keeps the customers and no longer has orders."""

    version: ClassVar[int] = 2

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("shop_customers", metadata, sa.Column("customer", sa.String(50), primary_key=True))

    def on_OrderPlaced(self, tx: Transaction, event: RecordedEvent) -> None:
        pass


class Renamed(Shop):
    """A next version of ``Shop`` whose tables all have new names."""

    version: ClassVar[int] = 2

    def define_tables(self, metadata: sa.MetaData) -> None:
        sa.Table("shop_people", metadata, sa.Column("customer", sa.String(50), primary_key=True))

    def on_CustomerJoined(self, tx: Transaction, event: RecordedEvent) -> None:
        tx.connection.execute(self.table("shop_people").insert().values(customer=event.flow_id))

    def on_OrderPlaced(self, tx: Transaction, event: RecordedEvent) -> None:
        pass

    def on_CustomerLeft(self, tx: Transaction, event: RecordedEvent) -> None:
        pass


EXPECTED = {
    "shop_customers": [("ann",), ("bob",)],
    "shop_orders": [("o1", "ann"), ("o2", "ann"), ("o3", "bob")],
}


@pytest.fixture(params=[Shop, DeferredShop], ids=["plain", "deferred"])
def shop(request: pytest.FixtureRequest) -> type[Shop]:
    return request.param


def bumped(shop: type[Shop]) -> type[Shop]:
    """The same projection at its next version."""
    return type(shop.__name__, (shop,), {"version": shop.version + 1})


def trade(store: EventStore) -> None:
    store.append("ann", [NewEvent("CustomerJoined", {}), NewEvent("OrderPlaced", {"order": "o1"})])
    store.append("bob", [NewEvent("CustomerJoined", {}), NewEvent("OrderPlaced", {"order": "o3"})])
    store.append("ann", [NewEvent("OrderPlaced", {"order": "o2"})])


def read(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    with store.engine.connect() as conn:
        return {
            name: [tuple(row) for row in conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY 1"))]
            for name in EXPECTED
        }


def assert_key_holds(store: EventStore, shop: type[Shop]) -> None:
    """The live orders' key names the live customers, keeps its options, and refuses an orphan."""
    inspector = sa.inspect(store.engine)
    assert set(inspector.get_table_names()) >= {"shop_customers", "shop_orders"}
    assert not [name for name in inspector.get_table_names() if name.endswith("__rebuild")]
    (key,) = inspector.get_foreign_keys("shop_orders")
    assert (key["referred_table"], key["referred_columns"]) == ("shop_customers", ["customer"])
    assert {option: value for option, value in key["options"].items() if value} == {
        "ondelete": "CASCADE",
        **shop.timing(),
    }
    orders, customers = Shop().table("shop_orders"), Shop().table("shop_customers")
    with pytest.raises(StorageError, match=r"(?i)foreign key"), store.transaction() as tx:
        tx.connection.execute(orders.insert().values(order_id="orphan", customer="nobody"))
    if shop.deferred:  # the key waits for the COMMIT: an order may come before its customer
        with store.transaction() as tx:
            tx.connection.execute(orders.insert().values(order_id="early", customer="cy"))
            tx.connection.execute(customers.insert().values(customer="cy"))
            tx.connection.execute(customers.delete().where(customers.c.customer == "cy"))


def test_a_version_bump_rebuilds_the_tables_with_their_key(target: Target, shop: type[Shop]) -> None:
    with target.open(projections=[shop()]) as store:
        trade(store)
        assert read(store) == EXPECTED
    with target.open(projections=[bumped(shop)()]) as store:
        assert read(store) == EXPECTED
        assert_key_holds(store, shop)


def test_rebuilds_keep_the_key_and_its_cascade(target: Target, shop: type[Shop]) -> None:
    with target.open(projections=[shop()]) as store:
        trade(store)
        rebuild(store, shop())
        rebuild(store, shop())
        assert read(store) == EXPECTED
        assert_key_holds(store, shop)
        store.append("ann", [NewEvent("CustomerLeft", {})])
        assert read(store) == {"shop_customers": [("bob",)], "shop_orders": [("o3", "bob")]}


def test_a_first_build_over_an_existing_log(target: Target, shop: type[Shop]) -> None:
    with target.open() as store:
        trade(store)
    with target.open(projections=[shop()]) as store:
        assert read(store) == EXPECTED
        assert_key_holds(store, shop)


def live_tables(store: EventStore) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names()) & {"shop_customers", "shop_orders", "shop_people"}


@pytest.mark.parametrize("older", [Shop, StrictShop], ids=["cascading", "strict"])
def test_a_new_version_drops_the_old_tables_orders_first(target: Target, older: type[Shop]) -> None:
    with target.open(projections=[older()]) as store:
        trade(store)
    with target.open(projections=[Renamed()]) as store:
        assert live_tables(store) == {"shop_people"}


def test_a_new_version_drops_a_table_whose_key_points_at_one_it_keeps(target: Target) -> None:
    with target.open(projections=[StrictShop()]) as store:
        trade(store)
    with target.open(projections=[CustomersOnly()]) as store:
        assert live_tables(store) == {"shop_customers"}


@pytest.mark.parametrize("referred", ["flows.flow_id", "elsewhere.shop_customers.customer", "nowhere.id"])
def test_a_key_to_a_table_it_does_not_define_is_refused_when_made(referred: str) -> None:
    """It failed as its tables were built, with SQLAlchemy's own NoReferencedTableError."""

    def define_tables(self: Projection, metadata: sa.MetaData) -> None:
        sa.Table("shop_customers", metadata, sa.Column("customer", sa.String(50), primary_key=True))
        sa.Table(
            "shop_orders",
            metadata,
            sa.Column("order_id", sa.String(50), primary_key=True),
            sa.Column("flow", sa.String(200), sa.ForeignKey(referred)),
        )

    table, _, column = referred.rpartition(".")
    cls = type("Outward", (Projection,), {"name": "outward", "define_tables": define_tables})
    with pytest.raises(
        ProjectionError,
        match=re.escape(
            f"its table 'shop_orders' has a foreign key to '{table}' ('{column}'), a table it does not define"
        ),
    ):
        cls()
