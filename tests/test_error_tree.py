"""One exception root (issue 10, item 5): every error tokenwarden defines is under
TokenwardenError, and one a user meets ends in one line."""

import importlib
import inspect
import pkgutil

import events
import scheduler
import worker
from tests.helpers import assert_refused
from worker.errors import TokenwardenError
from worker.store import keys as k


def defined_exceptions():
    for package in (events, worker, scheduler):
        for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(module_info.name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseException) and value.__module__ == module.__name__:
                    yield value


def test_every_error_tokenwarden_defines_is_under_the_one_root():
    outside = sorted(
        f"{error.__module__}.{error.__qualname__}"
        for error in defined_exceptions()
        if not issubclass(error, TokenwardenError)
    )
    assert outside == []


def test_a_subscription_that_lost_its_url_is_one_line_not_a_traceback(cli, app, snapshot):
    # Given a webhook subscription whose stored URL is gone
    added = cli("subscriptions", "add", "https://hooks.example.org/x", "--json")
    assert added.exit_code == 0, added.output
    subscription_id = app.deliveries.subscriptions()[0].id
    app.redis.hdel(k.subscription(subscription_id), "url")
    # When its full URL is asked for, Then the answer is one line saying what to do
    assert_refused(
        cli,
        snapshot,
        ("subscriptions", "show", subscription_id, "--reveal-url"),
        "has no URL; remove it and add it again",
    )
