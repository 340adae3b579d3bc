"""SCIM provisioning (issue 12, item 5): Okta- and Entra-shaped requests through a running
intake (uvicorn) and a real worker on real Redis; scim2-tester against the same endpoint."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from scim2_client import BaseSyncSCIMClient
from scim2_tester import check_server
from scim2_tester.utils import Status

from events import catalog
from tests.helpers import DOWNLOADED, every_redis_byte, install, replacements
from worker.intake import scim_storage
from worker.store import keys as k

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
#: A password a directory pushes; it must be found nowhere.
PASSWORD = "Correct-Horse-7731-Battery"


def add_source(cli, name, *extra):
    result = cli("sources", "add", name, "--kind", "scim", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class Directory:
    """A directory's SCIM client, as Okta or Entra ID talks to the intake."""

    def __init__(self, intake, added):
        self.base = intake + added["path"]
        self.http = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {added['secret']}"},
        )

    def create(self, body):
        response = self.http.post("/Users", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def patch(self, user_id, *operations):
        body = {"schemas": [PATCH_OP], "Operations": list(operations)}
        return self.http.patch(f"/Users/{user_id}", json=body)

    def find(self, user_name):
        found = self.http.get("/Users", params={"filter": f'userName eq "{user_name}"'})
        assert found.status_code == 200, found.text
        return found.json()


def okta_user(login, **extra):
    """A creation as Okta's SCIM 2.0 app sends it (Push New Users, Sync Password on)."""
    return {
        "schemas": [USER],
        "userName": login,
        "name": {"givenName": "Edna", "familyName": "Krabappel"},
        "emails": [{"primary": True, "value": login, "type": "work"}],
        "displayName": "Edna Krabappel",
        "locale": "en-US",
        "externalId": "00u1ab2cd3EF4gh5i6j7",
        "groups": [],
        "password": PASSWORD,
        "active": True,
        **extra,
    }


def entra_user(upn):
    """A creation as Entra ID's provisioning service sends it (default attribute mappings)."""
    return {
        "schemas": [USER, ENTERPRISE],
        "externalId": "edna",
        "userName": upn,
        "active": True,
        "addresses": [{"primary": True, "type": "work", "locality": "Springfield"}],
        "displayName": "Edna Krabappel",
        "emails": [{"primary": True, "type": "work", "value": upn}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Edna Krabappel", "familyName": "Krabappel", "givenName": "Edna"},
        "title": "Teacher",
        ENTERPRISE: {"department": "4th grade", "employeeNumber": "4711"},
    }


@pytest.fixture
def lab(cli, clock, tmp_path):
    """Server Lab with a token downloaded by Teacher@School.edu 20 days ago."""
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "Teacher@School.edu", DOWNLOADED, days_left=345)


@pytest.fixture
def okta(cli, intake):
    return Directory(intake, add_source(cli, "okta-scim"))


@pytest.fixture
def entra(cli, intake):
    # Entra's UPNs are in the tenant's domain; the Managed Apple Accounts in the school's.
    added = add_source(cli, "entra", "--map-domain", "school.onmicrosoft.com=school.edu")
    return Directory(intake, added)


def reasons(cli):
    return [(r["type"], r["source"], r["count"]) for o in replacements(cli) for r in o["reasons"]]


def test_okta_deactivating_the_downloader_opens_the_replacement_once(cli, worker, lab, okta):
    # Given Okta provisioned the downloader (and looked them up first, as it does)
    assert okta.find("teacher@school.edu")["totalResults"] == 0
    user_id = okta.create(okta_user("teacher@school.edu"))
    assert okta.find("Teacher@School.edu")["Resources"][0]["id"] == user_id
    # When Okta deactivates them
    deactivated = okta.patch(user_id, {"op": "replace", "value": {"active": False}})
    assert deactivated.status_code == 200, deactivated.text
    assert deactivated.json()["active"] is False
    worker.drain()
    # Then the token must be replaced because the user left
    assert reasons(cli) == [(catalog.USER_LEFT, "urn:tokenwarden:scim:okta-scim", 1)]
    # And Okta repeating it (PATCH, or a PUT of the inactive user) tells nothing new
    assert okta.patch(user_id, {"op": "replace", "value": {"active": False}}).status_code == 200
    profile = okta_user("teacher@school.edu", active=False)
    del profile["password"]  # a profile update without a password change
    put = okta.http.put(f"/Users/{user_id}", json=profile)
    assert put.status_code == 200, put.text
    worker.drain()
    assert reasons(cli) == [(catalog.USER_LEFT, "urn:tokenwarden:scim:okta-scim", 1)]


def test_entra_disabling_with_a_string_false_and_a_capitalised_op_counts(cli, worker, lab, entra):
    # Given Entra provisioned the downloader under their UPN (mapped to the Apple domain)
    assert entra.find("nobody-7f1c@school.onmicrosoft.com")["Resources"] == []  # its test
    user_id = entra.create(entra_user("teacher@school.onmicrosoft.com"))
    # When Entra soft-deletes them, the way it does without the aadOptscim062020 flag
    disabled = entra.patch(user_id, {"op": "Replace", "path": "active", "value": "False"})
    assert disabled.status_code == 200, disabled.text
    worker.drain()
    [opened] = replacements(cli)
    assert [(r["type"], r["subject"]) for r in opened["reasons"]] == [
        (catalog.USER_LEFT, "teacher@school.edu")
    ]
    # And the hard delete 30 days later says nothing new
    assert entra.http.delete(f"/Users/{user_id}").status_code == 204
    worker.drain()
    assert reasons(cli) == [(catalog.USER_LEFT, "urn:tokenwarden:scim:entra", 1)]
    assert entra.http.get(f"/Users/{user_id}").status_code == 404


def test_deleting_an_active_user_is_a_departure(cli, worker, lab, entra):
    user_id = entra.create(entra_user("teacher@school.onmicrosoft.com"))
    assert entra.http.delete(f"/Users/{user_id}").status_code == 204
    assert entra.http.delete(f"/Users/{user_id}").status_code == 404
    worker.drain()
    assert reasons(cli) == [(catalog.USER_LEFT, "urn:tokenwarden:scim:entra", 1)]


def test_an_okta_password_sync_is_a_password_change_and_the_password_is_kept_nowhere(
    cli, worker, lab, okta, redis_url, capfd, clock
):
    # Given Okta created the user with a first password (not a change)
    user_id = okta.create(okta_user("teacher@school.edu"))
    worker.drain()
    assert replacements(cli) == []
    # When Okta syncs a new password
    synced = okta.patch(user_id, {"op": "replace", "value": {"password": PASSWORD + "-2"}})
    assert synced.status_code == 200, synced.text
    assert "password" not in synced.json()
    worker.drain()
    # Then the token must be replaced because the password changed
    assert reasons(cli) == [(catalog.PASSWORD_CHANGED, "urn:tokenwarden:scim:okta-scim", 1)]
    # And a password in a PUT is a change too (another request: nothing tells a re-sent
    # password from a new one without keeping it)
    clock.now += timedelta(minutes=5)
    put = okta.http.put(f"/Users/{user_id}", json=okta_user("teacher@school.edu"))
    assert put.status_code == 200, put.text
    worker.drain()
    assert reasons(cli) == [(catalog.PASSWORD_CHANGED, "urn:tokenwarden:scim:okta-scim", 2)]
    # And the password is nowhere: not in Redis, not in a response, not in the logs
    assert PASSWORD.encode() not in every_redis_byte(redis_url)
    assert PASSWORD not in okta.http.get(f"/Users/{user_id}").text
    logged = capfd.readouterr()
    assert PASSWORD not in logged.out + logged.err


def test_only_what_provisioning_needs_is_stored(okta, redis_client):
    user_id = okta.create(okta_user("teacher@school.edu"))
    stored = json.loads(redis_client.hget(k.scim_user("okta-scim", user_id), "r"))
    assert set(stored) == {
        "userName", "externalId", "active", "displayName", "name", "emails", "created",
        "lastModified",
    }  # fmt: skip
    assert okta.http.get(f"/Users/{user_id}").json()["userName"] == "teacher@school.edu"


def test_lists_page_and_filter(okta, clock):
    for n in range(5):  # listed in the order they were created
        clock.now += timedelta(seconds=1)
        okta.create(okta_user(f"user{n}@school.edu", displayName=f"User {n}"))
    page = okta.http.get("/Users", params={"startIndex": 3, "count": 2}).json()
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (5, 3, 2)
    assert [u["userName"] for u in page["Resources"]] == ["user2@school.edu", "user3@school.edu"]
    last = okta.http.get("/Users", params={"startIndex": 5, "count": 100}).json()
    assert [u["userName"] for u in last["Resources"]] == ["user4@school.edu"]
    assert okta.find("USER3@school.edu")["totalResults"] == 1
    # any other filter would read every user: refused (tests/test_intake_scim_review.py)
    walked = okta.http.get("/Users", params={"filter": 'displayName sw "User"', "count": 1})
    assert (walked.status_code, walked.json()["scimType"]) == (400, "invalidFilter")
    bad = okta.http.get("/Users", params={"filter": "userName eq"})
    assert (bad.status_code, bad.json()["scimType"]) == (400, "invalidFilter")


def test_a_taken_user_name_is_a_uniqueness_error(okta):
    okta.create(okta_user("teacher@school.edu"))
    again = okta.http.post("/Users", json=okta_user("TEACHER@school.edu"))
    assert (again.status_code, again.json()["scimType"]) == (409, "uniqueness")


def test_a_source_holds_at_most_its_cap_of_users(okta, monkeypatch):
    monkeypatch.setattr(scim_storage, "MAX_USERS_PER_SOURCE", 2)
    okta.create(okta_user("a@school.edu"))
    okta.create(okta_user("b@school.edu"))
    full = okta.http.post("/Users", json=okta_user("c@school.edu"))
    assert full.status_code == 403
    assert "most users" in full.json()["detail"]


def test_refusals(cli, intake, okta, snapshot):
    other = cli("sources", "add", "hr", "--kind", "cloudevents", "--json")
    assert other.exit_code == 0
    okta.create(okta_user("teacher@school.edu"))
    before = snapshot()
    users = f"{okta.base}/Users"
    # no secret, a wrong one: 401 with nothing to learn
    for headers in ({}, {"Authorization": "Bearer tws_" + "x" * 40}):
        refused = httpx.get(users, headers=headers)
        assert (refused.status_code, refused.content) == (401, b"")
    # an unknown source, or a source of another kind: 404
    assert httpx.get(f"{intake}/sources/nowhere/scim/v2/Users").status_code == 404
    assert httpx.get(f"{intake}/sources/hr/scim/v2/Users").status_code == 404
    # too large, not JSON, malformed JSON, too long a value: SCIM errors, nothing stored
    huge = okta.http.post("/Users", content=b"{" + b" " * (1024 * 1024) + b"}")
    assert huge.status_code == 413
    text = okta.http.post("/Users", content=b"userName=x", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    scim_json = {"Content-Type": "application/scim+json"}
    broken = okta.http.post("/Users", content=b'{"userName": ', headers=scim_json)
    assert (broken.status_code, broken.json()["scimType"]) == (400, "invalidSyntax")
    long = okta.http.post("/Users", json=okta_user("x" * 300 + "@school.edu"))
    assert (long.status_code, long.json()["scimType"]) == (400, "invalidValue")
    assert "userName is longer than 256" in long.json()["detail"]
    unknown = okta.patch("0" * 32, {"op": "remove", "path": "displayName"})
    assert unknown.status_code == 404
    assert okta.http.get("/Groups").status_code == 404
    assert snapshot() == before


class _HttpxScimClient(BaseSyncSCIMClient):
    """scim2-client over httpx (its own engine wants httpx2), pointed at the running intake."""

    def __init__(self, client: httpx.Client, **kwargs):
        super().__init__(**kwargs)
        self.client = client

    def _stays_under_base_url(self, endpoint: str) -> bool:
        url, base = self.client.build_request("GET", endpoint).url, self.client.base_url
        same_origin = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
        return same_origin and url.raw_path.startswith(base.raw_path)

    def _parse_json(self, response):
        return response.json()

    def request(self, method: str, url: str, **kwargs):
        return self.client.request(method, url, **kwargs)


def test_scim2_tester_passes_every_check(okta):
    results = check_server(_HttpxScimClient(okta.http))
    passed = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}
    failed = [(r.title, r.status.name, r.reason) for r in results if r.status not in passed]
    assert failed == []
    checked = {r.title for r in results}
    assert {"object_creation", "object_replacement", "object_deletion"} <= checked
    assert {"check_add_attribute", "check_replace_attribute", "check_remove_attribute"} <= checked


@pytest.mark.parametrize(
    ("before", "after", "password", "expected"),
    [
        ({"active": True}, {"active": False}, False, [catalog.USER_LEFT]),
        ({}, {"active": False}, False, [catalog.USER_LEFT]),  # no `active`: counted active
        ({"active": False}, {"active": False}, False, []),  # already gone: nothing new
        ({"active": False}, {"active": True}, False, []),  # coming back is no cause
        ({"active": True}, {"active": True}, True, [catalog.PASSWORD_CHANGED]),
        ({"active": True}, {"active": False}, True, [catalog.USER_LEFT, catalog.PASSWORD_CHANGED]),
    ],
)
def test_what_a_change_of_a_provisioned_user_means(before, after, password, expected):
    from worker.intake import scim_events

    def user(record):
        return {"userName": "teacher@school.edu", **record}

    request = "digest-of-the-request" if password else None
    changes = scim_events.on_update("u1", user(before), 3, user(after), password_request=request)
    assert [c.event_type for c in changes] == expected
    again = scim_events.on_update("u1", user(before), 3, user(after), password_request=request)
    assert [c.key for c in again] == [c.key for c in changes]  # a retry: the same ids
    later = scim_events.on_update("u1", user(before), 4, user(after), password_request=request)
    assert not {c.key for c in later} & {
        c.key for c in changes if c.event_type == catalog.USER_LEFT
    }


def test_removing_a_scim_source_forgets_the_users_it_provisioned(cli, okta, redis_client):
    for n in range(3):
        okta.create(okta_user(f"user{n}@school.edu"))
    assert redis_client.keys("tw:scim:okta-scim:*")
    assert cli("sources", "remove", "okta-scim").exit_code == 0
    assert redis_client.keys("tw:scim:okta-scim:*") == []
    assert okta.http.get("/Users").status_code == 404
