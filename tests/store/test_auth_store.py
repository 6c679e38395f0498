"""Access-control storage (accounts, API keys, sessions, the audit log) on both stores."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cidade.ngsild.timefmt import now as now_iso
from cidade.store.base import AuditQuery
from tests.conftest import running_store


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """(store, run): ``run(coroutine)`` drives it to completion on the store's event loop."""
    with running_store(kind, tmp_path) as (backend, loop):
        yield backend, loop.run_until_complete


def account(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "roles": ["viewer"], "tenants": [""], **more}


def key(key_id: str, owner: str, **more: Any) -> dict[str, Any]:
    return {"id": key_id, "secret_hash": f"h-{key_id}", "owner": owner, "tenants": ["t1"], **more}


def session(session_id: str, account_name: str, expires: float) -> dict[str, Any]:
    return {"id": session_id, "account": account_name, "expires": expires, "csrf": "c"}


def at(day: int, hour: int = 0) -> str:
    return f"2026-03-{day:02d}T{hour:02d}:00:00.000000Z"


# -- accounts ---------------------------------------------------------------------------------


def test_accounts_create_duplicate_replace_absent(store):
    s, run = store
    alice = account("alice", password_hash="x", nested={"a": [1, 2.5, None, True]})
    assert run(s.get_account("alice")) is None
    assert run(s.save_account(alice, create=True)) is True
    assert run(s.get_account("alice")) == alice
    # a second create with the same name changes nothing
    assert run(s.save_account(account("alice", roles=["admin"]), create=True)) is False
    assert run(s.get_account("alice")) == alice
    # replace
    changed = account("alice", roles=["admin"], tenants=["", "t1"])
    assert run(s.save_account(changed, create=False)) is True
    assert run(s.get_account("alice")) == changed
    # replacing an absent account creates nothing
    assert run(s.save_account(account("bob"), create=False)) is False
    assert run(s.get_account("bob")) is None


def test_accounts_are_listed_by_name(store):
    s, run = store
    for name in ["carol", "Bob", "alice", "bob", "Zed"]:
        assert run(s.save_account(account(name), create=True))
    # bytewise order (upper case before lower case), the same on both stores
    assert [a["name"] for a in run(s.list_accounts())] == ["Bob", "Zed", "alice", "bob", "carol"]


def test_delete_account_removes_its_sessions(store):
    s, run = store
    run(s.save_account(account("alice"), create=True))
    run(s.save_account(account("bob"), create=True))
    run(s.save_session(session("s1", "alice", 100.0)))
    run(s.save_session(session("s2", "alice", 200.0)))
    run(s.save_session(session("s3", "bob", 100.0)))
    run(s.save_api_key(key("k1", "alice"), create=True))
    assert run(s.delete_account("alice")) is True
    assert run(s.get_account("alice")) is None
    assert run(s.get_session("s1")) is None
    assert run(s.get_session("s2")) is None
    assert run(s.get_session("s3")) == session("s3", "bob", 100.0)
    assert run(s.get_api_key("k1")) == key("k1", "alice")  # keys stay (revoked by the caller)
    assert [a["name"] for a in run(s.list_accounts())] == ["bob"]
    assert run(s.delete_account("alice")) is False


# -- API keys ---------------------------------------------------------------------------------


def test_api_keys(store):
    s, run = store
    k1 = key("k1", "alice", scope=["entities:read"])
    assert run(s.get_api_key("k1")) is None
    assert run(s.save_api_key(k1, create=True)) is True
    assert run(s.get_api_key("k1")) == k1
    assert run(s.save_api_key(key("k1", "bob"), create=True)) is False
    assert run(s.get_api_key("k1")) == k1
    for key_id, owner in [("k2", "bob"), ("k0", "alice"), ("k3", "alice")]:
        assert run(s.save_api_key(key(key_id, owner), create=True)) is True
    # oldest first, whatever the ids
    assert [k["id"] for k in run(s.list_api_keys())] == ["k1", "k2", "k0", "k3"]
    assert [k["id"] for k in run(s.list_api_keys("alice"))] == ["k1", "k0", "k3"]
    assert [k["id"] for k in run(s.list_api_keys("bob"))] == ["k2"]
    assert run(s.list_api_keys("nobody")) == []
    # replacing keeps a key's place; replacing an absent one does nothing
    revoked = {**k1, "revoked": "2026-03-01T00:00:00.000000Z"}
    assert run(s.save_api_key(revoked, create=False)) is True
    assert run(s.get_api_key("k1")) == revoked
    assert [k["id"] for k in run(s.list_api_keys("alice"))] == ["k1", "k0", "k3"]
    assert run(s.save_api_key(key("k9", "alice"), create=False)) is False
    assert run(s.get_api_key("k9")) is None


# -- sessions ---------------------------------------------------------------------------------


def test_sessions(store):
    s, run = store
    assert run(s.get_session("s1")) is None
    first = session("s1", "alice", 1764100000.123456)
    run(s.save_session(first))
    assert run(s.get_session("s1")) == first
    renewed = session("s1", "alice", 1764200000.5)
    run(s.save_session(renewed))  # insert or replace
    assert run(s.get_session("s1")) == renewed
    run(s.save_session(session("s2", "alice", 50.0)))
    run(s.save_session(session("s3", "bob", 150.0)))
    run(s.save_session(session("s4", "bob", 250)))
    assert run(s.get_session("s4")) == session("s4", "bob", 250)

    assert run(s.delete_sessions(session_id="nope")) == 0
    assert run(s.delete_sessions(session_id="s1")) == 1
    assert run(s.get_session("s1")) is None
    assert run(s.delete_sessions(expired_before=150.0)) == 1  # s2 (50); s3 (150) is not before
    assert run(s.get_session("s2")) is None
    assert run(s.get_session("s3")) is not None
    assert run(s.delete_sessions(account="bob")) == 2
    assert run(s.get_session("s3")) is None
    assert run(s.get_session("s4")) is None
    with pytest.raises(ValueError):
        run(s.delete_sessions())
    with pytest.raises(ValueError):
        run(s.delete_sessions(session_id="s1", account="bob"))


# -- bad input ---------------------------------------------------------------------------------


def test_bad_records_are_refused_before_the_database(store):
    s, run = store
    for bad, error in [
        (["alice"], ValueError),
        ({"roles": []}, KeyError),
        ({"name": ""}, ValueError),
        ({"name": 7}, ValueError),
    ]:
        with pytest.raises(error):
            run(s.save_account(bad, create=True))
    for bad, error in [
        ("k1", ValueError),
        ({"owner": "alice"}, KeyError),
        ({"id": "k1"}, KeyError),
        ({"id": "k1", "owner": None}, ValueError),
    ]:
        with pytest.raises(error):
            run(s.save_api_key(bad, create=True))
    for bad, error in [
        (None, ValueError),
        ({"account": "a", "expires": 1.0}, KeyError),
        ({"id": "s", "expires": 1.0}, KeyError),
        ({"id": "s", "account": "a"}, KeyError),
        ({"id": "s", "account": "a", "expires": "tomorrow"}, ValueError),
    ]:
        with pytest.raises(error):
            run(s.save_session(bad))
    for bad, error in [
        ("login", ValueError),
        ({"at": at(1)}, KeyError),
        ({"event": "login", "colour": "red"}, ValueError),
        ({"event": "login", "actor": 5}, ValueError),
    ]:
        with pytest.raises(error):
            run(s.append_audit([bad]))
    assert run(s.list_accounts()) == []
    assert run(s.list_api_keys()) == []
    assert run(s.audit_events(AuditQuery())) == []


# -- the audit log ----------------------------------------------------------------------------


EVENTS = [
    {"at": at(1), "tenant": "", "actor": "account:alice", "event": "login",
     "outcome": "success", "target": None, "detail": {"ip": "10.0.0.1"}},
    {"at": at(1, 5), "tenant": "t1", "actor": "anonymous", "event": "login.failed",
     "outcome": "failure", "target": "account:bob", "detail": None},
    {"at": at(2), "tenant": "t1", "actor": "key:k1", "event": "entity.delete",
     "outcome": "success", "target": "urn:ngsi-ld:X:1", "detail": {"n": 1.5, "l": [1, "a"]}},
    {"at": at(3), "tenant": "t2", "actor": "account:alice", "event": "login.failed",
     "outcome": "failure", "target": "account:alice", "detail": {}},
    {"at": at(4), "tenant": None, "actor": "account:root", "event": "account.create",
     "outcome": "success", "target": "account:carol", "detail": {"roles": ["admin"]}},
]  # fmt: skip


def _strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "seq"} for e in events]


def test_audit_append_and_read_newest_first(store):
    s, run = store
    run(s.append_audit(EVENTS[:2]))
    run(s.append_audit(EVENTS[2:]))
    run(s.append_audit([]))
    got = run(s.audit_events(AuditQuery()))
    assert _strip(got) == EVENTS[::-1]
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 5
    assert all(set(e) == {"seq", *EVENTS[0]} for e in got)
    # "at" defaults to now
    start = now_iso()
    run(s.append_audit([{"event": "ping"}]))
    newest = run(s.audit_events(AuditQuery(limit=1)))[0]
    assert newest["event"] == "ping" and start <= newest["at"] <= now_iso()
    assert newest["seq"] > seqs[0]
    assert newest["tenant"] is newest["actor"] is newest["detail"] is None


def test_audit_filters_and_paging(store):
    s, run = store
    run(s.append_audit(EVENTS))

    def events(**filters: Any) -> list[str]:
        return [(e["at"], e["event"]) for e in run(s.audit_events(AuditQuery(**filters)))]

    def pick(*indexes: int) -> list[tuple[str, str]]:
        return [(EVENTS[i]["at"], EVENTS[i]["event"]) for i in indexes]

    assert events() == pick(4, 3, 2, 1, 0)
    assert events(tenants=["t1"]) == pick(2, 1)
    assert events(tenants=["", "t2"]) == pick(3, 0)
    assert events(tenants=[]) == []
    assert events(event="login.failed") == pick(3, 1)
    assert events(actor="account:alice") == pick(3, 0)
    assert events(since=at(1, 5)) == pick(4, 3, 2, 1)  # inclusive
    assert events(until=at(3)) == pick(2, 1, 0)  # exclusive
    assert events(since=at(1, 5), until=at(3)) == pick(2, 1)
    assert events(tenants=["t1", "t2"], event="login.failed", actor="anonymous") == pick(1)
    assert events(limit=2) == pick(4, 3)
    assert events(limit=0) == []
    # paging: each page continues below the last seq of the one before
    pages, before = [], None
    while True:
        page = run(s.audit_events(AuditQuery(limit=2, before_seq=before)))
        if not page:
            break
        pages.append([e["event"] for e in page])
        before = page[-1]["seq"]
    assert pages == [
        ["account.create", "login.failed"],
        ["entity.delete", "login.failed"],
        ["login"],
    ]
    seqs = [e["seq"] for e in run(s.audit_events(AuditQuery()))]
    assert events(before_seq=seqs[1], event="login.failed") == pick(1)


def test_the_database_refuses_to_change_the_audit_log(store, kind):
    s, run = store
    run(s.append_audit(EVENTS[:2]))
    before = run(s.audit_events(AuditQuery()))
    if kind == "sqlite":
        # through the store's own writer ...
        for sql in ("UPDATE audit_log SET actor = 'nobody'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                run(s.db.write(lambda c, sql=sql: c.execute(sql).rowcount))
        # ... and on a connection of its own
        conn = sqlite3.connect(s.db.path, isolation_level=None)
        try:
            for sql in (
                "UPDATE audit_log SET actor = 'nobody' WHERE seq = 1",
                "DELETE FROM audit_log",
            ):
                with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                    conn.execute(sql)
        finally:
            conn.close()
    else:
        import asyncpg

        async def attempt(sql: str) -> None:
            async with s.pool.acquire() as conn:
                await conn.execute(sql)

        for sql in (
            "UPDATE audit_log SET actor = 'nobody'",
            "DELETE FROM audit_log WHERE seq > 0",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                run(attempt(sql))
    assert run(s.audit_events(AuditQuery())) == before
    run(s.append_audit(EVENTS[2:3]))  # appending still works
    assert len(run(s.audit_events(AuditQuery()))) == 3


# -- the "auth" topic -------------------------------------------------------------------------


def test_postgres_announces_account_and_key_changes(tmp_path):
    """SQLite has one process and nothing to announce; PostgreSQL tells every worker."""
    with running_store("postgres", tmp_path) as (s, loop):
        loop.run_until_complete(_announced(s))


async def _announced(s: Any) -> None:
    heard = asyncio.Event()
    others = []
    await s.listen("auth", heard.set)
    await s.listen("contexts", lambda: others.append(1))

    async def fires(change: Any) -> None:
        heard.clear()
        assert await change
        await asyncio.wait_for(heard.wait(), 5)

    await fires(s.save_api_key(key("k1", "alice"), create=True))
    await fires(s.save_api_key(key("k1", "bob"), create=False))
    await fires(s.save_account(account("alice"), create=True))
    await fires(s.save_account(account("alice", roles=[]), create=False))
    await fires(s.delete_account("alice"))
    # what changes nothing announces nothing
    heard.clear()
    assert not await s.save_api_key(key("k1", "x"), create=True)
    assert not await s.save_account(account("zed"), create=False)
    assert not await s.delete_account("alice")
    await s.save_session(session("s1", "bob", 1.0))
    await asyncio.sleep(0.3)
    assert not heard.is_set()
    assert others == []
