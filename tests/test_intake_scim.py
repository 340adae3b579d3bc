"""SCIM provisioning (issue 12, item 5)."""

from __future__ import annotations

import json

import httpx


def add_source(cli, name="entra", *extra):
    result = cli("sources", "add", name, "--kind", "scim", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_smoke(cli, intake):
    added = add_source(cli)
    base = intake + added["path"]
    h = {"Authorization": "Bearer " + added["secret"]}
    r = httpx.get(base + "/ServiceProviderConfig", headers=h)
    print(r.status_code, r.text)
    r = httpx.post(base + "/Users", headers=h, json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "jdoe@school.edu", "active": True, "password": "hunter2", "title": "x"})
    print(r.status_code, r.text)
    uid = r.json()["id"]
    r = httpx.get(base + "/Users", headers=h, params={"filter": 'userName eq "JDOE@school.edu"'})
    print(r.status_code, r.text)
    r = httpx.patch(base + f"/Users/{uid}", headers=h, json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]})
    print(r.status_code, r.text)
    r = httpx.get(base + f"/Users/{uid}", headers=h)
    print(r.status_code, r.text)
    assert 0
