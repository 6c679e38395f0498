"""The `cidade` command: serve the platform, migrate the store."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from cidade import __version__
from cidade.config import load_settings, settings_to_env


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        store=args.store, host=args.host, port=args.port, workers=args.workers, mqtt=args.mqtt
    )
    os.environ.update(settings_to_env(settings))
    from granian.constants import Interfaces
    from granian.server import Server

    print(f"Cidade {__version__} serving on http://{settings.host}:{settings.port}", flush=True)
    print(f"  store: {settings.store}", flush=True)
    if settings.mqtt:
        from cidade.devices.mqtt import parse_broker_url

        print(f"  devices: MQTT {parse_broker_url(settings.mqtt).safe()}", flush=True)
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


def _user(args: argparse.Namespace) -> int:
    """`cidade user ...`: accounts, straight on the store (the first administrator has no one
    to log in as yet). Each change is audited as done by the command line."""
    import getpass

    from cidade.auth.accounts import AccountError, Accounts, NotFound, public_account
    from cidade.auth.audit import Audit
    from cidade.auth.principal import EVERY_TENANT, Principal
    from cidade.store import open_store

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
        store = open_store(settings.store)
        await store.open()
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
    from cidade.store import open_store

    settings = load_settings(store=args.store)

    async def run() -> int:
        store = open_store(settings.store)
        await store.open()
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
