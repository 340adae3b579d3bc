"""A webhook URL often carries a secret in its path or query: it is stored sealed and shown,
everywhere, as scheme, host and port only, unless asked for with `subscriptions show
--reveal-url`."""

import json

import pytest
from structlog.testing import capture_logs

from tests.helpers import DOWNLOADED, emit, every_redis_byte, install, wait_until
from worker.notify.subscriptions import redact_url
from worker.notify.webhook import without_url
from worker.store import keys as k

#: Pieces of the URLs below that must never be seen without --reveal-url.
SECRET_PATH = "T024BE7LD/B01ABCDEFGH/AbCdEfGhIjKlMnOpQrStUvWx"
SECRET_QUERY = "token=s3cr3t-query-value"


@pytest.fixture
def lab(cli, clock, tmp_path):
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "Teacher@School.edu", DOWNLOADED, days_left=345)
    return "Lab"


def subscribe(cli, url):
    result = cli("subscriptions", "add", url, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"], result.stdout + result.stderr


def deliveries(cli):
    return json.loads(cli("deliveries", "list", "--json").stdout)


def assert_no_secret(text):
    for secret in (SECRET_PATH, SECRET_QUERY, "AbCdEfGhIjKlMnOp", "s3cr3t"):
        assert secret not in text, text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.org/services/x?token=1", "https://hooks.example.org/…"),
        ("https://hooks.example.org", "https://hooks.example.org/"),
        ("https://hooks.example.org/", "https://hooks.example.org/"),
        ("https://hooks.example.org/?t=1", "https://hooks.example.org/…"),
        ("https://Hooks.Example.org:443/a", "https://hooks.example.org/…"),
        ("https://hooks.example.org:8443/a", "https://hooks.example.org:8443/…"),
        ("http://hooks.example.org:80/a", "http://hooks.example.org/…"),
        ("http://hooks.example.org:443/a", "http://hooks.example.org:443/…"),
        ("http://[::1]:8080/a#frag", "http://[::1]:8080/…"),
        ("https://hooks.example.org/…", "https://hooks.example.org/…"),
    ],
)
def test_a_url_is_shown_as_scheme_host_and_port(url, shown):
    assert redact_url(url) == shown


def test_an_http_client_error_loses_the_url_path_and_query():
    url = f"https://hooks.example.org/{SECRET_PATH}?{SECRET_QUERY}"
    texts = [
        f"Client error '404 Not Found' for url '{url}'",
        f"bad request line: POST /{SECRET_PATH}?{SECRET_QUERY} HTTP/1.1",
        f"target /{SECRET_PATH.replace('/', '%2F')} refused",
    ]
    for text in texts:
        scrubbed = without_url(text, url)
        assert_no_secret(scrubbed)
    assert "https://hooks.example.org/…" in without_url(texts[0], url)


def test_the_url_is_sealed_and_list_json_and_deliveries_show_only_its_host(
    cli, app, lab, receiver, worker, redis_url
):
    # Given a webhook whose URL holds a secret in its path and query
    url = f"{receiver.url}/{SECRET_PATH}?{SECRET_QUERY}"
    shown = f"http://127.0.0.1:{receiver.url.split(':')[2].split('/')[0]}/…"
    with capture_logs() as logs:
        subscription_id, added = subscribe(cli, url)
        # When an event is delivered to it
        emit(cli, "user-left", "--user", "Teacher@School.edu")
        [request] = receiver.wait_for(1)
        wait_until(lambda: deliveries(cli) and deliveries(cli)[0]["status"] == "delivered")
    # Then it reached the full URL...
    assert request.path == f"/hook/{SECRET_PATH}?{SECRET_QUERY}"
    # ...but no Redis byte, CLI output or log line holds its path or query
    assert_no_secret(every_redis_byte(redis_url).decode("utf-8", "replace"))
    listed = cli("subscriptions", "list").stdout
    listed_json = json.loads(cli("subscriptions", "list", "--json").stdout)
    shown_one = cli("subscriptions", "show", subscription_id).stdout
    listed_deliveries = cli("deliveries", "list").stdout
    for text in (added, listed, json.dumps(listed_json), shown_one, listed_deliveries):
        assert_no_secret(text)
    assert_no_secret(json.dumps(logs, default=str))
    # and each shows scheme, host and port
    assert listed_json[0]["target"] == shown
    assert shown in listed and shown in shown_one and shown in listed_deliveries
    assert deliveries(cli)[0]["target"] == shown
    [attempt] = [e for e in logs if e["event"] == "delivery_attempt"]
    assert attempt["target"] == shown


def test_show_reveal_url_prints_it_in_full(cli, app):
    url = f"https://hooks.example.org/{SECRET_PATH}?{SECRET_QUERY}"
    subscription_id, _ = subscribe(cli, url)
    revealed = cli("subscriptions", "show", subscription_id, "--reveal-url")
    assert revealed.exit_code == 0, revealed.output
    assert url in revealed.stdout
    as_json = json.loads(cli("subscriptions", "show", subscription_id, "--json").stdout)
    assert as_json["target"] == "https://hooks.example.org/…"
    revealed_json = cli("subscriptions", "show", subscription_id, "--json", "--reveal-url")
    assert json.loads(revealed_json.stdout)["target"] == url
    missing = cli("subscriptions", "show", "sub_nope")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no subscription 'sub_nope'")


def test_an_e_mail_address_is_shown_in_full(cli, app):
    subscription_id, added = subscribe(cli, "mailto:it-team@springfield.edu")
    assert "it-team@springfield.edu" in added
    shown = json.loads(cli("subscriptions", "show", subscription_id, "--json").stdout)
    assert shown["target"] == "it-team@springfield.edu"


def test_a_failing_receiver_leaves_no_path_in_the_recorded_error(cli, app, lab, receiver, worker):
    # Given a receiver that drops the connection without answering
    receiver.default = "close"
    subscribe(cli, f"{receiver.url}/{SECRET_PATH}?{SECRET_QUERY}")
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    wait_until(lambda: deliveries(cli) and deliveries(cli)[0]["last_error"])
    # Then what was recorded says why, without the path
    [failed] = deliveries(cli)
    assert failed["last_error"].startswith(("RemoteProtocolError", "ReadError")), failed
    assert_no_secret(failed["last_error"])
    test = cli("subscriptions", "test", failed["subscription"])
    assert test.exit_code == 1
    assert_no_secret(test.stderr)


def test_a_subscription_stored_with_a_plain_url_keeps_working_and_a_worker_seals_it(
    cli, app, lab, receiver, redis_url, request
):
    # Given a subscription stored before URLs were sealed (its full URL in `target`)
    url = f"{receiver.url}/{SECRET_PATH}?{SECRET_QUERY}"
    subscription_id, _ = subscribe(cli, url)
    key = k.subscription(subscription_id)
    app.redis.hdel(key, "url", "shown")
    app.redis.hset(key, "target", url)
    # Then it is listed without its path, and its URL can still be revealed
    assert_no_secret(cli("subscriptions", "list", "--json").stdout)
    assert url in cli("subscriptions", "show", subscription_id, "--reveal-url").stdout
    # When a worker starts
    request.getfixturevalue("worker")
    # Then the URL is sealed, and deliveries reach it in full
    assert_no_secret(every_redis_byte(redis_url).decode("utf-8", "replace"))
    # (and `target` is gone: a worker of the older version fails on it rather than posting to
    # the redacted form during a rolling upgrade)
    assert app.redis.hget(key, "target") is None
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    [delivered] = receiver.wait_for(1)
    assert delivered.path == f"/hook/{SECRET_PATH}?{SECRET_QUERY}"
    assert url in cli("subscriptions", "show", subscription_id, "--reveal-url").stdout
