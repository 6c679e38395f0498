"""Telling the citizen, on both stores: the messages an occurrence's changes write are sent by
e-mail to a real SMTP server on loopback (aiosmtpd), by webhook and through an SMS gateway
(real HTTP receivers on loopback), each outcome in the message log; retries when a server is
down, refusals of private addresses, followers and departments, two senders at once."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cidade.config import Settings, load_settings
from cidade.occurrences.configuration import default_config
from cidade.occurrences.dispatch import Dispatcher, channels_from_settings
from cidade.occurrences.service import OccurrenceService, Report
from tests.conftest import LOOPBACK, running_store
from tests.occurrences.helpers import CITIZEN, OPERATOR, Clock
from tests.occurrences.smtp_sink import SmtpSink
from tests.receiver import Receiver

LAT, LON = 41.1496, -8.6109
CITY = "https://city.example"
FROM = "Porto <ocorrencias@porto.example>"
TOKEN = "gateway-secret"


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def gateway() -> Iterator[Receiver]:
    """The SMS gateway: a real HTTP server on loopback taking {to, text}."""
    r = Receiver(status=202)
    yield r
    r.close()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Env:
    def __init__(
        self, store: Any, loop: asyncio.AbstractEventLoop, smtp: SmtpSink, gateway: Receiver
    ) -> None:
        self.store = store
        self.loop = loop
        self.clock = Clock()
        self.smtp = smtp
        self.gateway = gateway
        self.config = default_config()
        space = self.config.departments["public-space"]
        self.config = dataclasses.replace(
            self.config,
            departments={
                **self.config.departments,
                # the department's own channels: where new tasks and breaches are announced
                "public-space": dataclasses.replace(
                    space, email="via-publica@porto.example", webhook=""
                ),
            },
        )
        self.service = OccurrenceService(self.store, self.config, public_url=CITY, clock=self.clock)
        self.dispatchers: list[Dispatcher] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def settings(self, **values: Any) -> Settings:
        values.setdefault("smtp_url", self.smtp.url)
        values.setdefault("smtp_from", FROM)
        values.setdefault("sms_gateway_url", self.gateway.url)
        values.setdefault("sms_gateway_token", TOKEN)
        values.setdefault("private_networks", LOOPBACK)
        values.setdefault("message_timeout", 3.0)
        return Settings(**values)

    def dispatcher(self, store: Any = None, **values: Any) -> Dispatcher:
        options = {
            k: values.pop(k) for k in ("max_attempts", "max_age", "lease", "poll") if k in values
        }
        d = Dispatcher(
            store or self.store,
            channels_from_settings(self.settings(**values)),
            clock=self.clock,
            **options,
        )
        self.dispatchers.append(d)
        return d

    def report(self, **more: Any) -> int:
        values: dict[str, Any] = {
            "category": "pothole",
            "description": "A deep hole in the road",
            "lat": LAT,
            "lon": LON,
            "address": "Avenida dos Aliados",
            "name": "Ana",
            "email": "ana@example.org",
        }
        values.update(more)
        return self.run(self.service.report("", CITIZEN, Report(**values))).occurrence.number

    def log(self, number: int | None = None) -> list[Any]:
        return self.run(self.store.occurrence_messages("", number))

    def close(self) -> None:
        for d in self.dispatchers:
            self.run(d.stop())


@pytest.fixture
def env(kind: str, tmp_path: Path, smtp: SmtpSink, gateway: Receiver) -> Iterator[Env]:
    with running_store(kind, tmp_path) as (store, loop):
        e = Env(store, loop, smtp, gateway)
        try:
            yield e
        finally:
            e.close()


def test_a_status_change_is_emailed_to_the_reporter_and_logged_as_sent(env: Env) -> None:
    n = env.report()
    assert env.log(n) == []  # a report is no news to its reporter
    token = env.run(env.service.get("", n)).doc["token"]
    env.run(env.service.act("", OPERATOR, n, "accept", note="We will fix it this week."))
    [pending] = env.log(n)
    assert pending.state == "pending" and pending.attempts == 0
    assert env.run(env.dispatcher().turn()) == 1
    [(sender, recipients, mail)] = env.smtp.wait_for(1)
    assert sender == "ocorrencias@porto.example" and recipients == ["ana@example.org"]
    assert mail["To"] == "ana@example.org"
    assert mail["Subject"] == f"Occurrence {n} (Pothole): Accepted"
    assert mail["Auto-Submitted"] == "auto-generated"
    body = mail.get_content()
    assert f"News on your report {n} (Pothole, Avenida dos Aliados)" in body
    assert "its status is Accepted" in body and "We will fix it this week." in body
    assert f"{CITY}/occurrences/follow/{token}" in body
    [sent] = env.log(n)
    assert sent.state == "sent" and sent.attempts == 1 and "accepted" in sent.result
    assert sent.doc["recipient"] == "reporter" and sent.doc["kind"] == "status"
    # nothing left to send
    assert env.run(env.dispatchers[0].turn()) == 0
    assert len(env.smtp.received) == 1


def test_a_webhook_gets_the_public_view_of_the_occurrence(env: Env, hook: Receiver) -> None:
    n = env.report(webhook=hook.url, notify="webhook", phone="+351 912 345 678")
    env.run(env.service.act("", OPERATOR, n, "accept"))
    env.run(env.service.act("", OPERATOR, n, "assign", departments=["public-space"]))
    d = env.dispatcher()
    assert env.run(d.turn()) == 3  # two to the reporter, one to the department's e-mail
    first, second = hook.wait_for(2)
    log = {m.seq: m for m in env.log(n)}
    body = first.body
    assert body["type"] == "OccurrenceMessage" and body["kind"] == "status"
    assert body["occurrence"] == {
        "number": n,
        "category": "pothole",
        "category_name": "Pothole",
        "status": "accepted",
        "status_label": "Accepted",
        "open": True,
        "update": None,
        "updated_at": body["occurrence"]["updated_at"],
        "follow_url": f"{CITY}/occurrences/follow/{env.run(env.service.get('', n)).doc['token']}",
    }
    assert first.headers["content-type"] == "application/json"
    assert int(first.headers["cidade-message"]) in log
    assert second.body["occurrence"]["status"] == "assigned"
    # nothing about anyone: not the reporter's name, e-mail, phone or webhook
    for r in (first, second):
        text = str(r.body)
        for private in ("Ana", "ana@example.org", "912 345", hook.url):
            assert private not in text
    assert {m.state for m in log.values()} == {"sent"}


def test_an_sms_goes_through_the_gateway(env: Env) -> None:
    n = env.report(email="", phone="+351 912 345 678")
    env.run(env.service.act("", OPERATOR, n, "accept", note="A team goes there tomorrow."))
    env.run(env.dispatcher().turn())
    [got] = env.gateway.wait_for(1)
    assert got.headers["authorization"] == f"Bearer {TOKEN}"
    assert got.body["to"] == "+351 912 345 678"
    token = env.run(env.service.get("", n)).doc["token"]
    assert got.body["text"] == (
        f"Occurrence {n} (Pothole): Accepted. A team goes there tomorrow. {CITY}/occurrences/follow/{token}"
    )
    assert set(got.body) == {"to", "text"}
    [m] = env.log(n)
    assert m.state == "sent" and m.doc["channel"] == "sms" and "202" in m.result


def test_a_down_smtp_server_is_tried_again_later(env: Env) -> None:
    env.smtp.stop()
    n = env.report()
    env.run(env.service.act("", OPERATOR, n, "accept"))
    d = env.dispatcher()
    assert env.run(d.turn()) == 1
    [m] = env.log(n)
    assert m.state == "pending" and m.attempts == 1
    assert "not reached" in m.result
    assert m.next_at == env.clock.now + 30  # the first wait
    assert env.run(d.turn()) == 0  # not due yet
    env.clock.advance(31)
    assert env.run(d.turn()) == 1  # still down: the wait doubles
    [m] = env.log(n)
    assert m.state == "pending" and m.attempts == 2 and m.next_at == env.clock.now + 60
    env.smtp.start()  # back, on the same port
    env.clock.advance(61)
    assert env.run(d.turn()) == 1
    env.smtp.wait_for(1)
    [m] = env.log(n)
    assert m.state == "sent" and m.attempts == 3


def test_a_message_is_given_up_after_its_tries(env: Env) -> None:
    env.smtp.stop()
    n = env.report()
    env.run(env.service.act("", OPERATOR, n, "accept"))
    d = env.dispatcher(max_attempts=2)
    env.run(d.turn())
    env.clock.advance(31)
    env.run(d.turn())
    [m] = env.log(n)
    assert m.state == "failed" and m.result.startswith("given up after 2 tries")
    env.clock.advance(3600)
    assert env.run(d.turn()) == 0


def test_a_webhook_to_a_private_address_fails_without_connecting(env: Env, hook: Receiver) -> None:
    n = env.report(email="", webhook=hook.url)
    env.run(env.service.act("", OPERATOR, n, "accept"))
    env.run(env.dispatcher(private_networks="").turn())  # loopback not allowed
    [m] = env.log(n)
    assert m.state == "failed" and m.attempts == 1
    assert "CIDADE_PRIVATE_NETWORKS" in m.result and "not public" in m.result
    assert hook.attempts == 0  # never connected


def test_channels_not_configured_fail_saying_why(env: Env) -> None:
    a = env.report()
    b = env.report(email="", phone="+351 912 345 678")
    for n in (a, b):
        env.run(env.service.act("", OPERATOR, n, "accept"))
    env.run(env.dispatcher(smtp_url="", sms_gateway_url="").turn())
    [ma], [mb] = env.log(a), env.log(b)
    assert ma.state == "failed" and "no SMTP server is configured (CIDADE_SMTP_URL)" in ma.result
    assert mb.state == "failed" and "CIDADE_SMS_GATEWAY_URL" in mb.result
    assert env.smtp.received == [] and env.gateway.received == []


def test_followers_are_told_and_nothing_of_the_reporter(env: Env, hook: Receiver) -> None:
    n = env.report()
    env.run(env.service.follow("", n, {"email": "bea@example.org"}))
    env.run(env.service.follow("", n, {"webhook": hook.url}))
    env.run(env.service.follow("", n, {"email": "bea@example.org"}))  # once is enough
    assert env.run(env.service.get("", n)).doc["followers"] == 2
    env.run(env.service.act("", OPERATOR, n, "accept"))
    env.run(env.dispatcher().turn())
    mails = {tuple(r): m for _, r, m in env.smtp.wait_for(2)}
    assert set(mails) == {("ana@example.org",), ("bea@example.org",)}
    follower = mails[("bea@example.org",)].get_content()
    assert f"News on occurrence {n}" in follower and "you follow this occurrence" in follower
    assert "Ana" not in follower and "ana@example.org" not in follower
    [got] = hook.wait_for(1)
    assert "ana@example.org" not in str(got.body) and "bea@example.org" not in str(got.body)
    recipients = sorted(m.doc["recipient"] for m in env.log(n))
    assert recipients == ["follower", "follower", "reporter"]
    assert {m.state for m in env.log(n)} == {"sent"}


def test_departments_are_told_of_tasks_and_breaches(env: Env, hook: Receiver) -> None:
    lighting = env.config.departments["public-lighting"]
    env.service.base_config = dataclasses.replace(
        env.config,
        departments={
            **env.config.departments,
            "public-lighting": dataclasses.replace(lighting, webhook=hook.url),
        },
    )
    n = env.report(email="")  # an anonymous report: nobody to tell but departments
    env.run(env.service.act("", OPERATOR, n, "accept"))
    env.run(
        env.service.act("", OPERATOR, n, "assign", departments=["public-space", "public-lighting"])
    )
    env.clock.advance(9 * 3600)  # normal priority: respond within 8 hours (met), resolve in 5 d
    env.clock.advance(5 * 86400)
    assert env.run(env.service.mark_breaches()) == 1
    env.run(env.dispatcher().turn())
    log = env.log(n)
    assert sorted((m.doc["recipient"], m.doc["kind"], m.doc["channel"]) for m in log) == [
        ("department:public-lighting", "breach", "webhook"),
        ("department:public-lighting", "task", "webhook"),
        ("department:public-space", "breach", "email"),
        ("department:public-space", "task", "email"),
    ]
    mails = env.smtp.wait_for(2)
    subjects = sorted(m["Subject"] for _, _, m in mails)
    assert subjects == [f"Deadline breached: occurrence {n}", f"New task: occurrence {n}"]
    assert all(r == ["via-publica@porto.example"] for _, r, _ in mails)
    bodies = sorted((r.body["kind"], r.body["occurrence"]["number"]) for r in hook.wait_for(2))
    assert bodies == [("breach", n), ("task", n)]
    assert {m.state for m in log} == {"sent"}


def test_a_write_wakes_the_running_dispatcher(env: Env) -> None:
    d = env.dispatcher(poll=60)  # left alone, it would look again in a minute
    env.service.on_messages.append(d.wake)

    async def scenario() -> None:
        d.start()
        await asyncio.sleep(0.1)
        report = Report(category="pothole", description="A hole", address="Rua", email="a@b.pt")
        n = (await env.service.report("", OPERATOR, report)).occurrence.number
        await env.service.act("", OPERATOR, n, "accept")
        for _ in range(100):
            if env.smtp.received:
                break
            await asyncio.sleep(0.05)
        await d.stop()

    env.run(scenario())
    assert len(env.smtp.wait_for(1, timeout=0)) == 1


def test_addresses_and_texts_stay_out_of_the_log(env: Env, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    env.smtp.stop()
    n = env.report(phone="+351 912 345 678")
    env.run(env.service.follow("", n, {"webhook": "http://10.1.2.3/hook"}))
    env.run(env.service.act("", OPERATOR, n, "accept", note="Secret-ish note"))
    env.run(env.dispatcher(private_networks="").turn())
    assert {m.state for m in env.log(n)} == {"pending", "failed"}
    said = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "message" in said  # it did log (seq and channel)
    for private in ("ana@example.org", "10.1.2.3", "Secret-ish", "Pothole", "912 345"):
        assert private not in said


def test_two_dispatchers_never_send_one_message_twice(
    kind: str, tmp_path: Path, smtp: SmtpSink, gateway: Receiver, hook: Receiver
) -> None:
    """Two workers (two stores on one database, as two processes have) send side by side."""
    from cidade.store.postgres import PostgresStore
    from cidade.store.sqlite import SqliteStore

    with running_store(kind, tmp_path) as (store, loop):
        env = Env(store, loop, smtp, gateway)
        other = (
            SqliteStore(str(tmp_path / "store.db"))
            if kind == "sqlite"
            else PostgresStore(store.url)
        )
        env.run(other.open())
        try:
            numbers = [env.report(email="", webhook=hook.url) for _ in range(30)]
            for n in numbers:
                env.run(env.service.act("", OPERATOR, n, "accept"))
                env.run(env.service.act("", OPERATOR, n, "reject"))
            a, b = env.dispatcher(), env.dispatcher(other)
            a.batch = b.batch = 7  # several turns each, interleaved

            async def both() -> list[int]:
                counts = [0, 0]

                async def drain(i: int, d: Dispatcher) -> None:
                    while (claimed := await d.turn()) > 0:
                        counts[i] += claimed

                await asyncio.gather(drain(0, a), drain(1, b))
                return counts

            counts = env.run(both())
            got = hook.wait_for(60)
            ids = [int(r.headers["cidade-message"]) for r in got]
            assert len(ids) == 60 and len(set(ids)) == 60
            assert sum(counts) == 60 and all(counts), counts  # both took part
            log = env.run(store.occurrence_messages("", limit=1000))
            assert len(log) == 60 and {(m.state, m.attempts) for m in log} == {("sent", 1)}
            # a claim nobody settles (a worker that died) is taken again once its lease ends
            n = env.report(email="", webhook=hook.url)
            env.run(env.service.act("", OPERATOR, n, "accept"))
            [dead] = env.run(other.claim_occurrence_messages(env.clock.now, 60))
            assert env.run(a.turn()) == 0  # leased
            env.clock.advance(61)
            assert env.run(a.turn()) == 1
            # the late worker cannot settle what was taken since
            assert not env.run(
                other.settle_occurrence_message(dead.seq, dead.attempts, "sent", "x")
            )
            [m] = env.log(n)
            assert m.state == "sent" and m.attempts == 2
            assert len(hook.wait_for(61)) == 61
        finally:
            env.close()
            env.run(other.close())


def test_the_settings_are_checked_at_start() -> None:
    ok = {"CIDADE_SMTP_URL": "smtps://user:p%40ss@mail.example:465", "CIDADE_SMTP_FROM": FROM}
    settings = load_settings(ok)
    assert settings.smtp_url.startswith("smtps://")
    from cidade.occurrences.dispatch.email import parse_smtp_url

    server = parse_smtp_url(settings.smtp_url)
    assert (server.host, server.port, server.tls, server.password) == (
        "mail.example",
        465,
        True,
        "p@ss",
    )
    assert parse_smtp_url("smtp://mail.example").port == 25
    for environ, says in (
        ({"CIDADE_SMTP_URL": "http://mail.example", "CIDADE_SMTP_FROM": FROM}, "smtp or smtps"),
        ({"CIDADE_SMTP_URL": "smtp://mail.example"}, "CIDADE_SMTP_FROM"),
        ({"CIDADE_SMTP_FROM": "nobody"}, "not an e-mail address"),
        ({"CIDADE_SMS_GATEWAY_URL": "ftp://sms.example"}, "CIDADE_SMS_GATEWAY_URL"),
        ({"CIDADE_MESSAGE_LEASE": "5"}, "CIDADE_MESSAGE_LEASE"),
        ({"CIDADE_MESSAGE_MAX_ATTEMPTS": "0"}, "CIDADE_MESSAGE_MAX_ATTEMPTS"),
        ({"CIDADE_MESSAGE_POLL": "0"}, "CIDADE_MESSAGE_POLL"),
    ):
        with pytest.raises(SystemExit, match=says):
            load_settings(environ)
