"""build_app(settings) -> the ASGI application serving every API of the platform."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cidade import __version__
from cidade.auth.accounts import Accounts
from cidade.auth.api import AuthApi
from cidade.auth.audit import Audit
from cidade.auth.errors import AccessDenied, Unauthenticated
from cidade.auth.gate import Gate, parse_public_types
from cidade.auth.roles import PUBLIC
from cidade.auth.routes import guarded
from cidade.config import Settings, tune_collector
from cidade.devices.agent import Agent
from cidade.devices.api import ProvisioningApi
from cidade.devices.commands import Commands
from cidade.devices.mqtt_process import BridgeProcess
from cidade.devices.provisioning import DeviceProvisioning
from cidade.devices.southbound import Southbound
from cidade.http.egress import EgressPolicy
from cidade.http.middleware import EmptySegments, LiteralPlus, TrailingSlash
from cidade.http.responses import problem_response
from cidade.hub.api import HubApi
from cidade.hub.jsonld import ContextResolver
from cidade.hub.notify import Notifier
from cidade.hub.registrations_api import RegistrationApi
from cidade.hub.retention import Purger, RetentionPolicy, parse_retention
from cidade.hub.subscriptions_api import SubscriptionApi
from cidade.hub.temporal_api import TemporalApi
from cidade.ngsild.errors import (
    InternalError,
    MethodNotAllowed,
    NgsiError,
    ResourceNotFound,
    error_for_status,
)
from cidade.occurrences import open311
from cidade.occurrences.api import OccurrencesApi
from cidade.occurrences.configuration import load_config
from cidade.occurrences.dispatch import Dispatcher
from cidade.occurrences.entities import OccurrenceMirror
from cidade.occurrences.messages_api import MessagesApi
from cidade.occurrences.rules import RuleEngine
from cidade.occurrences.service import OccurrenceService, watch_deadlines
from cidade.occurrences.statistics_api import StatisticsApi
from cidade.openapi import openapi_route
from cidade.store import Store, open_store
from cidade.store.base import CSOURCE_KIND

log = logging.getLogger("cidade")

# Statuses that access errors stand for (their ProblemDetails type, WWW-Authenticate).
_ACCESS_ERRORS: dict[int, type[NgsiError]] = {401: Unauthenticated, 403: AccessDenied}


def build_app(settings: Settings, store: Store | None = None) -> Starlette:
    if store is None:
        store = open_store(
            settings.store,
            history=settings.history,
            history_after_delete=settings.history_after_delete,
        )

    resolver = ContextResolver(
        fetch_timeout=settings.context_fetch_timeout,
        max_cached=settings.context_cache_size,
        base_urls=[settings.base_url],
        store=store,
        egress=EgressPolicy.from_text(settings.private_networks),
    )
    hub = HubApi(settings, store, resolver)
    audit = Audit(store)
    accounts = Accounts(store, audit, session_max_age=settings.session_max_age)
    oidc = None
    if settings.oidc_issuer:
        from cidade.auth.oidc import OidcVerifier

        oidc = OidcVerifier(settings)
    gate = Gate(
        settings,
        accounts,
        audit,
        public_types=parse_public_types(settings.public_types, resolver.core.expand),
        oidc=oidc,
    )
    notifier = Notifier(store, resolver, settings)
    provisioning = DeviceProvisioning(store)
    agent = Agent(store, resolver.core)
    commands = Commands(
        store, hub.entities, agent, audit, resolver.core, timeout=settings.command_timeout
    )
    agent.on_answers = commands.answers
    hub.commands = commands

    # Devices' messages in, commands out: the MQTT bridge runs in a process of its own
    # (devices/mqtt_process.py), which maps messages while this one writes them.
    bridge = BridgeProcess(settings, agent) if settings.mqtt else None

    def devices_changed() -> None:
        agent.forget()
        commands.forget()
        if bridge is not None:
            bridge.forget()

    provisioning.on_change.append(devices_changed)
    agent.on_provisioned = commands.provisioned
    ready = {"ok": False}
    background: set[asyncio.Task] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        background.add(task)  # a reference until done, or the loop may collect it mid-way
        task.add_done_callback(background.discard)

    occurrences = OccurrenceService(
        store,
        load_config(settings.occurrences_config),
        public_url=settings.base_url,
        max_photo_bytes=settings.occurrence_photo_max_bytes,
    )
    # Each occurrence is also an NGSI-LD entity, written after each change commits.
    mirror = OccurrenceMirror(store, resolver.core)
    occurrences.on_written.append(mirror.written)
    # Telling reporters, followers and departments: woken by every write that adds messages.
    dispatcher = Dispatcher.from_settings(store, settings)
    occurrences.on_messages.append(dispatcher.wake)

    def city_timezone() -> str:
        simulator = getattr(app.state, "simulator", None)
        city = getattr(simulator, "city", None)
        return settings.timezone or (city.timezone if city is not None else "UTC")

    rules = RuleEngine(store, occurrences, interval=settings.rules_interval, timezone=city_timezone)

    policy = RetentionPolicy.build(parse_retention(settings.history_retention), resolver.core)
    purger = Purger(store, policy, settings.history_purge_interval)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        if not settings.auth:
            log.warning(
                "ACCESS CONTROL IS OFF (CIDADE_AUTH=off): every caller is an administrator."
                " Use this for local development only, never on a network."
            )
        elif not settings.oidc_issuer and not await store.list_accounts():
            log.warning(
                "no account exists yet: create the first administrator with"
                " `cidade user add NAME --role admin --tenant '*' --store %s`",
                settings.store.split("?")[0] if settings.store.startswith("sqlite") else "...",
            )
        await resolver.sync_stored()
        # Another worker changed an account or a key: forget what this one cached about them.
        await store.listen("auth", gate.forget)
        # Another worker added or deleted a hosted @context: follow it within milliseconds.
        await store.listen("contexts", lambda: spawn(resolver.sync_stored()))
        # Another worker provisioned or changed a device: its profile is read again.
        await store.listen("devices", devices_changed)
        await notifier.start()
        collecting = tune_collector()  # everything built so far lives as long as the process
        purging = None
        if settings.history and policy.active:
            purging = asyncio.create_task(purger.run(), name="history retention")
        expiring = asyncio.create_task(commands.run_expiry(), name="command expiry")
        counting = asyncio.create_task(
            resolver.run_usage_flusher(settings.context_usage_flush), name="@context usage"
        )
        deadlines = asyncio.create_task(
            watch_deadlines(occurrences, settings.occurrence_deadline_check),
            name="occurrence deadlines",
        )
        mirroring = asyncio.create_task(
            mirror.run(settings.occurrence_mirror_check), name="occurrence entities"
        )
        dispatcher.start()
        sensing = None
        if settings.rules_interval > 0:
            sensing = asyncio.create_task(rules.run(), name="sensor rules")
        if bridge is not None:
            # It connects (and reconnects) on its own; its process is started again if it dies.
            await bridge.start()
            commands.sink = bridge
        demo = None
        if settings.demo:
            # The demo city's simulated devices, in this process (cidade demo; docs/demo.md).
            from cidade.demo.simulator import Simulator

            app.state.simulator = Simulator.from_settings(settings, provisioning, agent, commands)
            demo = asyncio.create_task(_demo(app.state.simulator), name="demo city")
        ready["ok"] = True
        try:
            yield
        finally:
            ready["ok"] = False
            if demo is not None:
                demo.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo
            if bridge is not None:
                try:
                    await asyncio.wait_for(bridge.stop(), 10)
                except TimeoutError:
                    log.warning("the MQTT bridge did not stop within 10 s; going on with shutdown")
            try:
                await asyncio.wait_for(notifier.stop(), 10)
            except TimeoutError:
                log.warning("the notifier did not stop within 10 s; going on with shutdown")
            await dispatcher.stop()
            try:  # the hub entities of the last changes, before the store closes
                await asyncio.wait_for(mirror.idle(), 10)
            except TimeoutError:
                log.warning("occurrences' hub entities still being written; the catch-up will")
            for task in (purging, expiring, counting, deadlines, mirroring, sensing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            try:
                await resolver.flush_usage()
            except Exception:
                log.exception("could not store the last @context usage counts")
            await resolver.aclose()
            if oidc is not None:
                await oidc.aclose()
            await store.close()
            gc.set_threshold(*collecting)

    async def health(request: Request) -> Response:
        if not ready["ok"]:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    async def ngsi_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NgsiError)
        if open311.serves(request.url.path):
            return open311.ngsi_error_answer(request, exc)
        return problem_response(exc, exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if open311.serves(request.url.path) and exc.status_code >= 400:
            # Open311 clients read errors in GeoReport's own envelope, the router's too.
            if exc.status_code == 404:
                detail = f"no resource at {request.url.path}"
            elif exc.status_code == 405:
                detail = f"{request.method} is not allowed here"
            else:
                detail = str(exc.detail)
            return open311.error_answer(request, exc.status_code, detail, exc.headers)
        if exc.status_code == 404:
            return problem_response(ResourceNotFound(f"no resource at {request.url.path}"))
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            return problem_response(
                MethodNotAllowed(f"{request.method} is not allowed here"), {"Allow": allow}
            )
        if exc.status_code < 400:  # not an error: an answer given early
            return Response(status_code=exc.status_code, headers=exc.headers)
        # Any other status is answered as itself, in the envelope of every other error.
        access = _ACCESS_ERRORS.get(exc.status_code)
        error = access(exc.detail) if access else error_for_status(exc.status_code, exc.detail)
        headers = {**(error.headers or {}), **(exc.headers or {})}
        return problem_response(error, headers or None)

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Log the failure without the request body: it may hold personal data.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if open311.serves(request.url.path):
            return open311.error_answer(request, 500, "unexpected error; see the server log")
        return problem_response(InternalError("unexpected error; see the server log"))

    routes = [
        guarded("/health", {"GET": (health, PUBLIC)}),
        openapi_route(),
        *AuthApi(settings, accounts, audit, gate).routes(),
        *hub.routes(),
        *TemporalApi(hub).routes(),
        *SubscriptionApi(hub).routes(),
        *RegistrationApi(hub).routes(),
        *SubscriptionApi(hub, kind=CSOURCE_KIND).routes(),
        *ProvisioningApi(settings, provisioning).routes(),
        *Southbound(agent, settings.max_body_bytes).routes(),
        # before /occurrences/{number}, which would take "statistics" for a number
        *StatisticsApi(occurrences).routes(),
        *MessagesApi(
            occurrences,
            audit,
            EgressPolicy.from_text(settings.private_networks),
            settings.max_body_bytes,
        ).routes(),
        *OccurrencesApi(settings, occurrences, audit).routes(),
        *open311.Open311Api(settings, occurrences).routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(TrailingSlash),
            Middleware(EmptySegments),
            Middleware(LiteralPlus, answer=_early_error),
        ],
        exception_handlers={
            NgsiError: ngsi_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
    app.state.settings = settings
    app.state.gate = gate
    app.state.accounts = accounts
    app.state.store = store
    app.state.hub = hub
    app.state.provisioning = provisioning
    app.state.agent = agent
    app.state.commands = commands
    app.state.bridge = bridge
    app.state.notifier = notifier
    app.state.purger = purger
    app.state.occurrences = occurrences
    app.state.occurrence_mirror = mirror
    app.state.dispatcher = dispatcher
    app.state.rules = rules
    app.state.simulator = None
    return app


def _early_error(scope: Any, error: NgsiError) -> Response:
    """An error a middleware answers before routing: in Open311's envelope under /open311/."""
    if open311.serves(scope.get("path", "")):
        return open311.ngsi_error_answer(Request(scope), error)
    return problem_response(error, error.headers)


async def _demo(simulator: Any) -> None:
    try:
        await simulator.run()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the demo city's simulation stopped")


def app_from_env() -> Starlette:
    """The granian entry point: settings from the environment the CLI prepared."""
    from cidade.config import load_settings

    return build_app(load_settings())
