"""The Redis delivery store implements the notification side's Store protocol: every operation
the dispatcher, the deliverer and the services use, with the same parameters."""

import inspect

import pytest

from worker.notify.store import NotificationStore
from worker.store.delivery_store import DeliveryStore


def operations(protocol) -> list[str]:
    return sorted(
        name
        for name, value in inspect.getmembers(protocol, inspect.isfunction)
        if not name.startswith("_")
    )


@pytest.mark.parametrize("name", operations(NotificationStore))
def test_the_redis_delivery_store_has_each_operation_of_the_protocol(name):
    wanted = inspect.signature(getattr(NotificationStore, name))
    offered = inspect.signature(getattr(DeliveryStore, name))
    assert list(offered.parameters) == list(wanted.parameters)


def test_the_protocol_names_the_operations_the_notification_side_uses():
    assert {"create_deliveries", "claim_due", "record_attempt", "read_outbox"} <= set(
        operations(NotificationStore)
    )
