"""History: every change of every attribute instance is kept, in the same transaction as the
change, on both stores; deleting an entity deletes its history."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest

from cidade.store.base import HistoryQuery, WriteOp
from cidade.store.history import INSTANCE_PREFIX as INSTANCE_ID
from tests.conftest import running_store

D = "https://uri.etsi.org/ngsi-ld/default-context/"
T = D + "temperature"
H = D + "humidity"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> Iterator[tuple[object, asyncio.AbstractEventLoop]]:
    with running_store(request.param, tmp_path) as opened:
        yield opened


def reading(value: float, at: str, **extra) -> dict:
    return {
        "type": "Property",
        "value": value,
        "observedAt": at,
        "createdAt": at,
        "modifiedAt": at,
        **extra,
    }


def entity(eid: str, attrs: dict, at: str) -> dict:
    return {"id": eid, "type": [D + "Sensor"], "createdAt": at, "modifiedAt": at, "attrs": attrs}


def put(store, loop, eid: str, doc: dict | None) -> None:
    (result,) = loop.run_until_complete(store.write("", [WriteOp(eid, lambda _c: doc)]))
    assert not isinstance(result, Exception), result


def test_every_change_is_kept_in_time_order(store):
    s, loop = store
    times = [f"2026-03-0{d}T10:00:00.000000Z" for d in range(1, 6)]
    for n, at in enumerate(times):
        put(
            s,
            loop,
            "urn:s:1",
            entity("urn:s:1", {T: [reading(20 + n, at)], H: [reading(50, times[0])]}, at),
        )
    hist = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:1"])))
    temps = hist["urn:s:1"][T]
    assert [i["value"] for i in temps] == [20, 21, 22, 23, 24]
    assert [i["_t"] for i in temps] == times
    assert len({i["instanceId"] for i in temps}) == 5
    assert all(i["instanceId"].startswith("urn:ngsi-ld:") for i in temps)
    # humidity never changed after the first write: one instance only
    assert [i["value"] for i in hist["urn:s:1"][H]] == [50]


def test_an_instance_keeps_the_id_it_was_written_with(store):
    """An attribute instance written with its own instanceId is that instance in the history:
    one of another origin, and one of ours, on a bare number and beside other members."""
    s, loop = store
    at = "2026-03-01T10:00:00.000000Z"
    ours = INSTANCE_ID + "ab" * 16
    put(
        s,
        loop,
        "urn:s:ids",
        entity(
            "urn:s:ids",
            {
                T: [reading(21.5, at, instanceId="urn:x:given")],
                H: [reading(40, at, instanceId=ours, unitCode="P1")],
            },
            at,
        ),
    )
    hist = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:ids"])))
    assert [(i["value"], i["instanceId"]) for i in hist["urn:s:ids"][T]] == [(21.5, "urn:x:given")]
    (humidity,) = hist["urn:s:ids"][H]
    assert humidity["instanceId"] == ours and humidity["unitCode"] == "P1"
    assert humidity["value"] == 40


def test_time_window_last_n_and_attrs(store):
    s, loop = store
    times = [f"2026-0{m}-15T00:00:00.000000Z" for m in range(1, 7)]  # six months: six partitions
    for n, at in enumerate(times):
        put(s, loop, "urn:s:2", entity("urn:s:2", {T: [reading(n, at)]}, at))
    q = HistoryQuery(entity_ids=["urn:s:2"], after=times[1], before=times[4], after_inclusive=True)
    got = loop.run_until_complete(s.history("", q))["urn:s:2"][T]
    assert [i["value"] for i in got] == [1, 2, 3]  # [after, before)
    q = HistoryQuery(entity_ids=["urn:s:2"], last_n=2)
    assert [i["value"] for i in loop.run_until_complete(s.history("", q))["urn:s:2"][T]] == [4, 5]
    q = HistoryQuery(entity_ids=["urn:s:2"], attrs=[H])
    assert loop.run_until_complete(s.history("", q)) == {}


def test_order_by_time_then_instance_id_with_one_or_several_ids_and_attrs(store):
    # One entity and attribute is read with "=" (an ordered index scan on PostgreSQL), several
    # with "IN"/"= ANY": the same order either way, ties in time broken by instanceId.
    s, loop = store
    at = ["2026-01-31T23:59:59.999999Z", "2026-02-01T00:00:00.000001Z"]
    ids = [f"urn:ngsi-ld:attribute:instance:{n}" for n in range(4)]
    rows = [
        (T, "", ids[3], at[1], at[1], at[1], at[1], reading(3, at[1])),
        (T, "", ids[2], at[0], at[0], at[0], at[0], reading(2, at[0])),
        (T, "", ids[0], at[0], at[0], at[0], at[0], reading(0, at[0])),
        (H, "", ids[1], at[1], at[1], at[1], at[1], reading(1, at[1])),
    ]
    for eid in ("urn:s:6", "urn:s:7"):
        put(s, loop, eid, entity(eid, {}, at[0]))
        loop.run_until_complete(s.add_history("", eid, rows))
    for eids, attrs in ((["urn:s:6"], [T]), (["urn:s:7", "urn:s:6"], [H, T]), (["urn:s:6"], [])):
        got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=eids, attrs=attrs)))
        assert sorted(got) == sorted(eids)
        for eid in eids:
            assert [(i["instanceId"], i["_t"]) for i in got[eid][T]] == [
                (ids[0], at[0]),
                (ids[2], at[0]),
                (ids[3], at[1]),
            ]
    q = HistoryQuery(entity_ids=["urn:s:6", "urn:s:7"], attrs=[T], last_n=2)
    got = loop.run_until_complete(s.history("", q))
    assert [[i["value"] for i in got[e][T]] for e in ("urn:s:6", "urn:s:7")] == [[2, 3], [2, 3]]


def test_dataset_ids_are_separate_instances(store):
    s, loop = store
    at = "2026-05-01T00:00:00.000000Z"
    attrs = {T: [reading(1, at), reading(2, at, datasetId="urn:ds:roof")]}
    put(s, loop, "urn:s:3", entity("urn:s:3", attrs, at))
    got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:3"])))["urn:s:3"][T]
    assert sorted((i.get("datasetId", ""), i["value"]) for i in got) == [
        ("", 1),
        ("urn:ds:roof", 2),
    ]


def test_a_deleted_attribute_or_dataset_leaves_a_deletion_instance(store):
    """An instance the change removes (the attribute, or one datasetId of it) is recorded as
    deleted: the NGSI-LD Null in its value member, deletedAt the time of the change. Only those
    match time_property deletedAt, by that time."""
    s, loop = store
    t0, t1, t2 = (f"2026-05-0{d}T00:00:00.000000Z" for d in (1, 2, 3))
    rel = {"type": "Relationship", "object": "urn:x:1", "createdAt": t0, "modifiedAt": t0}
    attrs = {
        T: [reading(1, t0), reading(2, t0, datasetId="urn:ds:roof")],
        H: [reading(50, t0)],
        D + "near": [rel],
    }
    put(s, loop, "urn:s:d", entity("urn:s:d", attrs, t0))
    # t1: the roof's temperature goes; t2: humidity and the relationship go.
    put(s, loop, "urn:s:d", entity("urn:s:d", {**attrs, T: [reading(1, t0)]}, t1))
    put(s, loop, "urn:s:d", entity("urn:s:d", {T: [reading(1, t0)]}, t2))
    hist = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:d"])))["urn:s:d"]
    assert [(i["value"], i.get("deletedAt")) for i in hist[H]] == [
        (50, None),
        ("urn:ngsi-ld:null", t2),
    ]
    q = HistoryQuery(entity_ids=["urn:s:d"], time_property="deletedAt")
    deleted = loop.run_until_complete(s.history("", q))["urn:s:d"]
    assert sorted(deleted) == sorted([T, H, D + "near"])
    (roof,) = deleted[T]
    assert roof["value"] == "urn:ngsi-ld:null" and roof["datasetId"] == "urn:ds:roof"
    assert roof["deletedAt"] == roof["_t"] == t1
    (near,) = deleted[D + "near"]
    assert near["type"] == "Relationship" and near["object"] == "urn:ngsi-ld:null"
    assert near["_t"] == t2
    q = HistoryQuery(entity_ids=["urn:s:d"], time_property="deletedAt", after=t2)
    assert sorted(loop.run_until_complete(s.history("", q))["urn:s:d"]) == sorted([H, D + "near"])


def test_deleting_an_entity_deletes_its_history(store):
    s, loop = store
    at = "2026-05-01T00:00:00.000000Z"
    put(s, loop, "urn:s:4", entity("urn:s:4", {T: [reading(1, at)]}, at))
    put(s, loop, "urn:s:4", None)
    assert loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:4"]))) == {}


def test_a_refused_change_leaves_no_history(store):
    s, loop = store
    at = "2026-05-01T00:00:00.000000Z"
    put(s, loop, "urn:s:5", entity("urn:s:5", {T: [reading(1, at)]}, at))

    def refuse(current):
        raise ValueError("no")

    (result,) = loop.run_until_complete(s.write("", [WriteOp("urn:s:5", refuse)]))
    assert isinstance(result, ValueError)
    got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:5"])))
    assert len(got["urn:s:5"][T]) == 1


@pytest.fixture(params=["sqlite", "postgres"])
def keeping_store(request, tmp_path):
    with running_store(request.param, tmp_path) as (backend, loop):
        backend.history_after_delete = True
        yield backend, loop


def test_history_can_outlive_the_entity(keeping_store):
    s, loop = keeping_store
    at = "2026-05-01T00:00:00.000000Z"
    put(s, loop, "urn:s:6", entity("urn:s:6", {T: [reading(1, at)]}, at))
    put(s, loop, "urn:s:6", None)
    got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:6"])))
    assert [i["value"] for i in got["urn:s:6"][T]] == [1]


# -- SQLite: history appended to history_recent, merged into attr_history in sorted runs -----


@pytest.fixture
def sqlite_store(tmp_path):
    with running_store("sqlite", tmp_path) as opened:
        yield opened


def rows_in(s, loop, table: str) -> int:
    return loop.run_until_complete(
        s.db.read(lambda c: c.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    )


def test_recent_history_is_merged_in_runs_and_reads_see_all(sqlite_store, monkeypatch):
    from cidade.store.sqlite import store as sqlite_store_module

    monkeypatch.setattr(sqlite_store_module, "RECENT_MERGE_ROWS", 7)
    s, loop = sqlite_store
    times = [f"2026-03-01T10:00:{n:02d}.000000Z" for n in range(20)]
    for n, at in enumerate(times):
        ops = [
            WriteOp(
                f"urn:s:{k}",
                lambda _c, k=k, n=n, at=at: entity(
                    f"urn:s:{k}", {T: [reading(100 * k + n, at)]}, at
                ),
            )
            for k in range(3)
        ]
        loop.run_until_complete(s.write("", ops))
        # Every 7 rows or so a batch merges what came before it, itself included.
        assert rows_in(s, loop, "history_recent") < 7 + 3
    assert rows_in(s, loop, "attr_history") >= 60 - 9
    hist = loop.run_until_complete(
        s.history("", HistoryQuery(entity_ids=["urn:s:0", "urn:s:1", "urn:s:2"]))
    )
    for k in range(3):
        assert [i["value"] for i in hist[f"urn:s:{k}"][T]] == [100 * k + n for n in range(20)]
        assert [i["_t"] for i in hist[f"urn:s:{k}"][T]] == times
    # The read moved the rest: nothing of these entities is left behind.
    assert rows_in(s, loop, "history_recent") == 0
    assert rows_in(s, loop, "attr_history") == 60


def test_a_read_merges_only_when_its_entities_have_recent_rows(sqlite_store):
    s, loop = sqlite_store
    at = "2026-03-01T10:00:00.000000Z"
    put(s, loop, "urn:s:a", entity("urn:s:a", {T: [reading(1, at)]}, at))
    put(s, loop, "urn:s:b", entity("urn:s:b", {T: [reading(2, at)]}, at))
    assert rows_in(s, loop, "history_recent") == 2
    assert loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:x"]))) == {}
    assert rows_in(s, loop, "history_recent") == 2  # nothing of urn:s:x: no merge
    got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:b"])))
    assert [i["value"] for i in got["urn:s:b"][T]] == [2]
    assert rows_in(s, loop, "history_recent") == 0


def test_changes_to_history_reach_rows_not_merged_yet(sqlite_store):
    s, loop = sqlite_store
    at = "2026-03-01T10:00:00.000000Z"
    later = "2026-03-01T11:00:00.000000Z"
    put(s, loop, "urn:s:c", entity("urn:s:c", {T: [reading(1, at)], H: [reading(5, at)]}, at))
    put(s, loop, "urn:s:c", entity("urn:s:c", {T: [reading(2, later)], H: [reading(5, at)]}, later))
    assert rows_in(s, loop, "history_recent") == 3
    # Deleting one instance by its id finds it although it was still in history_recent.
    first = loop.run_until_complete(
        s.db.read(
            lambda c: c.execute(
                "SELECT instance_id FROM history_recent JOIN history_series USING (sid)"
                " WHERE attr = ? ORDER BY time",
                (T,),
            ).fetchone()[0]
        )
    )
    assert loop.run_until_complete(s.delete_history_instance("", "urn:s:c", T, first))
    got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:c"])))
    assert [i["value"] for i in got["urn:s:c"][T]] == [2]
    # A write after that, then the entity's deletion: its whole history goes, merged or not.
    put(s, loop, "urn:s:c", entity("urn:s:c", {T: [reading(3, later)], H: [reading(5, at)]}, later))
    assert rows_in(s, loop, "history_recent") == 1
    put(s, loop, "urn:s:c", None)
    assert rows_in(s, loop, "history_recent") == 0
    assert rows_in(s, loop, "attr_history") == 0


def test_closing_the_store_merges_what_is_recent(tmp_path):
    from cidade.store.sqlite import SqliteStore

    at = "2026-03-01T10:00:00.000000Z"
    with running_store("sqlite", tmp_path) as (s, loop):
        put(s, loop, "urn:s:d", entity("urn:s:d", {T: [reading(1, at)]}, at))
        assert rows_in(s, loop, "history_recent") == 1
    again = SqliteStore(str(tmp_path / "store.db"))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(again.open())
    try:
        assert rows_in(again, loop, "history_recent") == 0
        assert rows_in(again, loop, "attr_history") == 1
    finally:
        loop.run_until_complete(again.close())
        loop.close()


def test_sqlite_history_keeps_nothing_twice_and_reads_whole(sqlite_store):
    """A history row names its series by number, leaves out of its instance the times its
    columns hold, and of an id of ours its prefix; a time equal to the one before it is not
    kept again, nor an instance that is only a number. Reads give them all back, also for rows
    written whole before, and for ids of others."""
    from cidade.store.history import INSTANCE_PREFIX, history_row

    s, loop = sqlite_store
    at = "2026-03-01T10:00:00.000000Z"
    later = "2026-03-01T11:00:00.000000Z"
    bare = {**reading(4, at), "modifiedAt": later, "createdAt": later}
    put(s, loop, "urn:s:k", entity("urn:s:k", {T: [reading(1, at, unitCode="CEL")], H: [bare]}, at))
    kept = loop.run_until_complete(
        s.db.read(
            lambda c: c.execute(
                "SELECT s.tenant, s.entity_id, s.attr, r.instance_id, r.time, r.observed,"
                " r.modified_at, r.created_at, r.instance, r.num"
                " FROM history_recent r JOIN history_series s USING (sid) ORDER BY s.attr"
            ).fetchall()
        )
    )
    (_, _, attr_h, _, *bare_row), (tenant, eid, attr, iid, *row) = kept
    assert (tenant, eid, attr, attr_h) == ("", "urn:s:k", T, H)
    assert len(iid) == 32 and ":" not in iid
    assert row[:4] == [at, 1, None, None]  # observedAt, modifiedAt, createdAt: all the time
    assert orjson.loads(row[4]) == {"type": "Property", "value": 1, "unitCode": "CEL"}
    assert bare_row == [at, 1, later, None, None, 4]  # no JSON: num is the whole instance
    # Another's id (the temporal API's own writes), and a row as rows were written before.
    mine = history_row(T, reading(2, later, instanceId="urn:x:mine"), later)
    loop.run_until_complete(s.add_history("", "urn:s:k", [mine]))
    old_id, noon = INSTANCE_PREFIX + "0" * 32, "2026-03-01T12:00:00.000000Z"
    loop.run_until_complete(
        s.db.write(
            lambda c: c.execute(
                "INSERT INTO attr_history(sid, time, instance_id, dataset_id, observed,"
                " modified_at, created_at, instance, num)"
                " SELECT sid, ?, ?, '', 1, NULL, NULL, ?, 3 FROM history_series WHERE attr = ?",
                (noon, old_id, orjson.dumps(reading(3, noon)).decode(), T),
            ).rowcount
        )
    )  # fmt: skip
    got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:k"])))
    items = got["urn:s:k"][T]
    assert [i["value"] for i in items] == [1, 2, 3]
    assert items[0] == {
        **reading(1, at, unitCode="CEL"),
        "instanceId": INSTANCE_PREFIX + iid,
        "_t": at,
    }
    assert items[1]["instanceId"] == "urn:x:mine" and items[1]["observedAt"] == later
    assert items[2] == {**reading(3, noon), "instanceId": old_id, "_t": noon}
    assert got["urn:s:k"][H] == [
        {**bare, "instanceId": got["urn:s:k"][H][0]["instanceId"], "_t": at}
    ]
    # Each is found by its whole id.
    for item in items[1:]:
        assert loop.run_until_complete(
            s.delete_history_instance("", "urn:s:k", T, item["instanceId"])
        )
    replaced = history_row(T, reading(9, at, instanceId=items[0]["instanceId"]), at)
    assert loop.run_until_complete(s.replace_history_instance("", "urn:s:k", T, replaced))
    got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:k"])))
    assert [(i["value"], i["instanceId"]) for i in got["urn:s:k"][T]] == [
        (9, items[0]["instanceId"])
    ]


def test_history_written_before_series_reads_the_same_after_migration(tmp_path):
    """A database of schema 9 (rows keyed by tenant, entity and attribute; some still in
    history_recent, one of those a later write of an instance already merged) opens with its
    history whole: every instance, its times and its id, as reads gave them before."""
    import sqlite3

    from cidade.store.sqlite import SqliteStore
    from cidade.store.sqlite.store import migrations

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, sql in migrations():
        if number <= 9:
            conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
    at = "2026-03-01T10:00:00.000000Z"
    later = "2026-03-01T11:00:00.000000Z"
    columns = (
        "tenant, entity_id, attr, dataset_id, instance_id, time, observed_at, modified_at,"
        " created_at, instance, num"
    )
    conn.executemany(
        f"INSERT INTO attr_history({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            # written whole, before ids and instances were kept short
            ("", "urn:s:m", T, "", "urn:ngsi-ld:attribute:instance:" + "a" * 32, at, at, at, at,
             orjson.dumps(reading(1, at)).decode(), 1),
            ("", "urn:s:m", T, "", "b" * 32, later, later, later, at,
             '{"type":"Property","value":2}', 2),
            ("t2", "urn:s:m", H, "urn:ds:1", "=urn:x:c", at, None, at, at,
             '{"type":"Property","value":"high","datasetId":"urn:ds:1"}', None),
        ],
    )  # fmt: skip
    conn.executemany(
        f"INSERT INTO history_recent({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("", "urn:s:m", T, "", "b" * 32, later, later, later, at,
             '{"type":"Property","value":3}', 3),  # the same instance written again: it wins
            ("", "urn:s:n", T, "", "c" * 32, at, at, later, later,
             '{"type":"Property","value":4}', 4),
        ],
    )  # fmt: skip
    conn.close()
    s = SqliteStore(str(path))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(s.open())
    try:
        ids = ["urn:s:m", "urn:s:n"]
        got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=ids)))
        assert got == {
            "urn:s:m": {
                T: [
                    {**reading(1, at), "instanceId": INSTANCE_ID + "a" * 32, "_t": at},
                    {**reading(3, later), "createdAt": at, "instanceId": INSTANCE_ID + "b" * 32,
                     "_t": later},
                ]
            },
            "urn:s:n": {
                T: [{**reading(4, at), "createdAt": later, "modifiedAt": later,
                     "instanceId": INSTANCE_ID + "c" * 32, "_t": at}]
            },
        }  # fmt: skip
        other = loop.run_until_complete(s.history("t2", HistoryQuery(entity_ids=["urn:s:m"])))
        assert other == {
            "urn:s:m": {
                H: [{"type": "Property", "value": "high", "datasetId": "urn:ds:1",
                     "createdAt": at, "modifiedAt": at, "instanceId": "urn:x:c", "_t": at}]
            }
        }  # fmt: skip
        assert rows_in(s, loop, "history_series") == 3
        assert rows_in(s, loop, "history_recent") == 0
        # New rows go on the series the migration numbered.
        put(s, loop, "urn:s:n", entity("urn:s:n", {T: [reading(5, later)]}, later))
        got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=["urn:s:n"])))
        assert [i["value"] for i in got["urn:s:n"][T]] == [4, 5]
        assert rows_in(s, loop, "history_series") == 3
    finally:
        loop.run_until_complete(s.close())
        loop.close()


def test_series_numbers_remembered_by_the_writer_are_forgotten_when_wrong(
    sqlite_store, tmp_path, monkeypatch
):
    """The writer remembers series numbers across writes; a number that a rollback, a deleted
    history or another connection made wrong is not used again: history written after each of
    these reads back (with a wrong number it would be written to no series, and lost)."""
    import sqlite3

    from cidade.store.sqlite import store as sqlite_store_module

    s, loop = sqlite_store

    def values(eid: str) -> list:
        got = loop.run_until_complete(s.history("", HistoryQuery(entity_ids=[eid])))
        return [i["value"] for i in got.get(eid, {}).get(T, [])]

    times = iter(f"2026-03-01T10:00:{n:02d}.000000Z" for n in range(60))

    def write(eid: str, value: int) -> None:
        at = next(times)
        put(s, loop, eid, entity(eid, {T: [reading(value, at)]}, at))

    # A write that fails after numbering its series: rolled back, numbers and all.
    write("urn:s:r", 1)
    real = sqlite_store_module._watching

    def failing(*args):
        raise RuntimeError("a failure after the history rows were made")

    monkeypatch.setattr(sqlite_store_module, "_watching", failing)
    s.watch = object()  # type: ignore[assignment]  # so that the writer reaches _watching
    with pytest.raises(RuntimeError):
        write("urn:s:new", 2)
    monkeypatch.setattr(sqlite_store_module, "_watching", real)
    s.watch = None
    write("urn:s:new", 3)
    assert values("urn:s:new") == [3]
    # The entity's history forgotten, then written again.
    assert loop.run_until_complete(s.forget_history("", "urn:s:new"))
    write("urn:s:new", 4)
    assert values("urn:s:new") == [4]
    # The entity deleted (its history goes with it), then created again.
    put(s, loop, "urn:s:new", None)
    write("urn:s:new", 7)
    assert values("urn:s:new") == [7]
    # Another connection (a command-line tool) deletes a series and numbers a new one.
    write("urn:s:r", 5)
    assert values("urn:s:r") == [1, 5]
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("DELETE FROM attr_history WHERE sid IN (SELECT sid FROM history_series)")
    other.execute("DELETE FROM history_series")
    other.execute(
        "INSERT INTO history_series(sid, tenant, entity_id, attr) VALUES (1, '', 'urn:s:o', ?)",
        (H,),
    )
    other.execute("COMMIT")
    other.close()
    write("urn:s:r", 6)
    assert values("urn:s:r") == [6]
    assert values("urn:s:new") == []
