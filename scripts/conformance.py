#!/usr/bin/env python3
"""`make conformance`: ETSI's NGSI-LD conformance suite against a fresh Cidade, on both stores.

For each store (SQLite, PostgreSQL) and each group of areas below, a fresh store and a fresh
`cidade serve` (CIDADE_AUTH=false, CIDADE_PRIVATE_NETWORKS=127.0.0.0/8, so that the URLs the suite
gives reach its receivers on loopback), then the suite's own `run.sh` against it. Every summary is
printed; the command fails when a store's passed count in a group falls below the floor committed
in conformance/floor.txt (raise it with --raise-floor when the hub passes more; never lower it).

run.sh starts its receivers on fixed ports (8085-8087) and the MQTT tests use a broker on 1883
and 8085, so two runs cannot share a network. As root, with `unshare` and `ip`, each run goes
into a network namespace of its own (its own loopback, its own mosquitto at 127.0.0.2 on both
ports; PostgreSQL is reached through its Unix socket, which the filesystem shares) and all run
at the same time (--jobs N: at most N); elsewhere, or with --serial, one after the other, with
the machine's broker at 127.0.0.1:1883. docs/conformance.md says more.

env: CONFORMANCE_DIR (the suite; default ../shared/conformance beside the repository),
     CONFORMANCE_VENV (the suite's Python environment, as run.sh),
     CIDADE_CONFORMANCE_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test: a schema of
     its own in that database per run, dropped afterwards)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOR = REPO / "conformance" / "floor.txt"
STORES = ("sqlite", "postgres")
# Each group runs on a fresh store: discovery and query tests count what they find.
GROUPS: dict[str, list[str]] = {
    "core": [
        "ContextInformation/Provision/Entities",
        "ContextInformation/Provision/EntityAttributes",
        "ContextInformation/Provision/BatchEntities",
        "ContextInformation/Consumption/Entity",
        "ContextInformation/Consumption/Discovery",
        "jsonldContext",
        "CommonBehaviours",
    ],
    "temporal-subscriptions": [
        "ContextInformation/Provision/TemporalEntity",
        "ContextInformation/Provision/TemporalEntityAttributes",
        "ContextInformation/Consumption/TemporalEntity",
        "ContextInformation/Subscription",
    ],
    "context-sources": [
        "ContextSource/Registration",
        "ContextSource/Discovery",
        "ContextSource/RegistrationSubscription",
    ],
}
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")
TOTAL_LINE = re.compile(r"^total: (\d+) of (\d+) passed")


def suite_dir() -> Path:
    return Path(os.environ.get("CONFORMANCE_DIR") or REPO.parent / "shared" / "conformance")


def suite_venv() -> Path:
    default = Path.home() / ".cache" / "ngsi-ld-conformance-venv"
    return Path(os.environ.get("CONFORMANCE_VENV") or default)


def postgres_url() -> str:
    return os.environ.get("CIDADE_CONFORMANCE_POSTGRES") or DEFAULT_POSTGRES


# -- the floor ------------------------------------------------------------------------------


def read_floor(path: Path) -> dict[tuple[str, str], int]:
    """`store group passed` per line; # starts a comment."""
    floor: dict[tuple[str, str], int] = {}
    if not path.exists():
        return floor
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3 or not words[2].isdigit():
            raise SystemExit(f"{path}:{number}: expected 'STORE GROUP PASSED', got {line!r}")
        floor[(words[0], words[1])] = int(words[2])
    return floor


def below_floor(floor: dict[tuple[str, str], int], passed: dict[tuple[str, str], int]) -> list[str]:
    """What fell below its floor, one line each."""
    return [
        f"{store} {group}: {passed[store, group]} passed, floor {floor[store, group]}"
        for store, group in sorted(passed)
        if passed[store, group] < floor.get((store, group), 0)
    ]


def raised_floor(text: str, passed: dict[tuple[str, str], int]) -> str:
    """The floor file with each count raised to what passed (never lowered); lines for runs not
    in it yet are added; comments and order are kept."""
    seen = set()
    lines = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 3 and words[2].isdigit() and (words[0], words[1]) in passed:
            key = (words[0], words[1])
            seen.add(key)
            value = max(int(words[2]), passed[key])
            line = line.replace(f"{words[0]} {words[1]} {words[2]}", f"{key[0]} {key[1]} {value}")
        lines.append(line)
    lines += [f"{s} {g} {n}" for (s, g), n in sorted(passed.items()) if (s, g) not in seen]
    return "\n".join(lines) + "\n"


# -- one run --------------------------------------------------------------------------------


@dataclass
class Result:
    store: str
    group: str
    passed: int
    total: int
    seconds: float
    summary: str
    error: str = ""

    def line(self) -> str:
        if self.error:
            return f"{self.store:8s} {self.group:24s} ERROR: {self.error}"
        share = 100 * self.passed / max(self.total, 1)
        return (
            f"{self.store:8s} {self.group:24s} {self.passed:4d} of {self.total:<4d} "
            f"({share:5.1f}%) in {self.seconds:4.0f} s"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cidade serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"cidade serve did not answer {url} within {seconds:.0f} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _postgres(url: str, statement: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def fresh_store(kind: str, scratch: Path, pg_url: str) -> Iterator[str]:
    """A store URL nobody used before; a PostgreSQL schema of its own, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{scratch}/conformance.db"
        return
    schema = f"conformance_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{separator}schema={schema}"
    finally:
        _postgres(pg_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_suite(base: str, areas: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """run.sh in a process group of its own: stopped whole (robot, its receivers) if we are."""
    command = ["bash", str(suite_dir() / "run.sh"), base, *areas]
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_group(
    kind: str,
    group: str,
    out: Path,
    pg_url: str,
    areas: list[str] | None = None,
    mqtt_host: str | None = None,
) -> Result:
    """A fresh store and server, then the suite's run.sh on the group's areas; its MQTT tests
    use the broker at ``mqtt_host`` (run.sh's default, 127.0.0.1, when None)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cidade = Path(sys.executable).with_name("cidade")
    port = free_port()
    env = {
        **os.environ,
        "CIDADE_AUTH": "false",
        "CIDADE_PRIVATE_NETWORKS": "127.0.0.0/8",
        # The suite's README: its pagination tests (020_13, 020_14, 021_15, 021_16) expect 20
        # instances of an attribute to be cut into pages, its other tests 5 instances not to be.
        "CIDADE_TEMPORAL_MAX_INSTANCES": "10",
        "CONFORMANCE_OUT": str(out),
    }
    if mqtt_host:
        env["MQTT_HOST"] = mqtt_host
    with (
        tempfile.TemporaryDirectory(prefix="cidade-conformance-") as scratch,
        fresh_store(kind, Path(scratch), pg_url) as store,
    ):
        with open(out / "server.log", "wb") as log:
            server = subprocess.Popen(
                [str(cidade), "serve", "--port", str(port), "--store", store],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_serving(f"http://127.0.0.1:{port}/health", server)
            suite = run_suite(f"http://127.0.0.1:{port}", areas or GROUPS[group], env)
        except RuntimeError as exc:
            return Result(kind, group, 0, 0, time.monotonic() - started, "", str(exc))
        finally:
            stop(server)
    seconds = time.monotonic() - started
    summary = suite.stdout
    totals = [TOTAL_LINE.match(line) for line in summary.splitlines()]
    found = [m for m in totals if m]
    if suite.returncode != 0 or not found:
        error = f"run.sh exited {suite.returncode}: {(suite.stdout + suite.stderr)[-500:]}"
        return Result(kind, group, 0, 0, seconds, summary, error)
    return Result(kind, group, int(found[-1][1]), int(found[-1][2]), seconds, summary.rstrip("\n"))


# -- one store's runs, maybe in a network of their own ---------------------------------------


# The broker of the suite's MQTT tests in a namespace. They connect to mqtt_broker_host on 1883
# and on mqtt_broker_non_default_port (8085 in resources/variables.py: 058_01_02, 058_01_05),
# where the suite expects a broker of its own (a Mosquitto container, another host). 8085 is
# also the port of its HTTP notification receiver on 127.0.0.1, so the broker listens on
# another loopback address, which the suite is told as mqtt_broker_host (run.sh's MQTT_HOST).
MQTT_HOST = "127.0.0.2"
MQTT_PORTS = (1883, 8085)


def mosquitto_config(host: str, ports: tuple[int, ...]) -> str:
    listeners = "".join(f"listener {port} {host}\n" for port in ports)
    return f"{listeners}allow_anonymous true\npersistence false\n"


@contextlib.contextmanager
def own_mqtt_broker(
    scratch: Path, host: str = MQTT_HOST, ports: tuple[int, ...] = MQTT_PORTS
) -> Iterator[bool]:
    """A mosquitto on this namespace's loopback (``host``, each of ``ports``), for the suite's
    MQTT notification tests; yields whether it answers on every port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        print("no mosquitto: the MQTT notification tests will fail", file=sys.stderr)
        yield False
        return
    config = scratch / "mosquitto.conf"
    config.write_text(mosquitto_config(host, ports))
    broker = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        waiting = set(ports)
        deadline = time.monotonic() + 10
        while waiting and time.monotonic() < deadline and broker.poll() is None:
            for port in list(waiting):
                with contextlib.suppress(OSError), socket.create_connection((host, port), 1):
                    waiting.discard(port)
            if waiting:
                time.sleep(0.05)
        if waiting:
            print(f"mosquitto does not answer on {host} {sorted(waiting)}", file=sys.stderr)
        yield not waiting
    finally:
        stop(broker)


def run_store(
    kind: str,
    groups: list[str],
    out: Path,
    pg_url: str,
    isolated: bool,
    areas: list[str] | None = None,
) -> None:
    """One store's groups, one after the other; each result written as JSON beside its logs."""
    with (
        tempfile.TemporaryDirectory(prefix="cidade-conformance-") as scratch,
        contextlib.ExitStack() as stack,
    ):
        mqtt_host = None
        if isolated:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            stack.enter_context(own_mqtt_broker(Path(scratch)))
            mqtt_host = MQTT_HOST
        for group in groups:
            result = run_group(kind, group, out / kind / group, pg_url, areas, mqtt_host)
            (out / kind / group / "result.json").write_text(json.dumps(result.__dict__))
            print(result.line(), flush=True)


def socket_url(url: str) -> str | None:
    """The same PostgreSQL reached through its Unix socket (which a network namespace shares),
    or None when it is not on loopback or no socket is found."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    if "host" in query:
        return url if query["host"].startswith("/") else None
    if (parts.hostname or "") not in LOOPBACK_HOSTS:
        return None
    port = parts.port or 5432
    for folder in SOCKET_DIRS:
        if Path(folder, f".s.PGSQL.{port}").exists():
            user = f"{parts.username}@" if parts.username else ""
            if parts.password:
                user = f"{parts.username}:{parts.password}@"
            query.update(host=folder, port=str(port))
            rest = urllib.parse.urlencode(query)
            return urllib.parse.urlunsplit((parts.scheme, user, parts.path, rest, ""))
    return None


def can_isolate() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


def ensure_suite_venv() -> None:
    """run.sh makes the suite's environment on its first run; made here first, so that two
    runs started together do not both make it."""
    venv = suite_venv()
    if (venv / "bin" / "robot").exists():
        return
    print(f"making the suite's environment in {venv}", flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    requirements = suite_dir() / "requirements.txt"
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-r", str(requirements)], check=True
    )


# -- the command ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default=",".join(STORES), help="sqlite,postgres")
    parser.add_argument("--groups", default=",".join(GROUPS), help=",".join(GROUPS))
    parser.add_argument("--out", default=str(REPO / "build" / "conformance"), type=Path)
    parser.add_argument("--floor", default=FLOOR, type=Path, help="the floor file to check")
    parser.add_argument(
        "--raise-floor", action="store_true", help="raise the floor to what passed this time"
    )
    parser.add_argument(
        "--areas",
        default="",
        help="only these areas (comma-separated folders under TP/NGSI-LD, or parts of them) "
        "instead of the group's, to work on a few; one group then",
    )
    parser.add_argument("--serial", action="store_true", help="no namespaces: one run at a time")
    parser.add_argument("--jobs", type=int, default=0, help="runs at once (default: all)")
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Stopped (CI's cleanup, kill): unwind, so that servers, brokers and schemas go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stores = [s for s in args.stores.split(",") if s]
    groups = [g for g in args.groups.split(",") if g]
    for name in stores:
        if name not in STORES:
            parser.error(f"unknown store {name!r}")
    for name in groups:
        if name not in GROUPS:
            parser.error(f"unknown group {name!r}")
    areas = [a for a in args.areas.split(",") if a] or None
    if areas and len(groups) != 1:
        parser.error("--areas needs exactly one --groups")
    out: Path = args.out.resolve()
    if args.in_namespace:  # one store's runs, in the network namespace the parent made
        run_store(stores[0], groups, out, postgres_url(), isolated=True, areas=areas)
        return 0
    if not (suite_dir() / "run.sh").exists():
        print(f"no conformance suite at {suite_dir()} (set CONFORMANCE_DIR)", file=sys.stderr)
        return 2
    ensure_suite_venv()
    for kind in stores:
        for group in groups:
            shutil.rmtree(out / kind / group, ignore_errors=True)
    started = time.monotonic()
    pg = postgres_url()
    pg_socket = socket_url(pg) if "postgres" in stores else None
    # A single run goes into a namespace too: its receivers' fixed ports and the broker are then
    # its own, whatever else runs on this machine.
    parallel = (
        not args.serial and ("postgres" not in stores or pg_socket is not None) and can_isolate()
    )
    if parallel:
        # Every run in a network namespace of its own, all at once (--jobs at most): the suite
        # spends most of its time waiting for notifications and timeouts, not computing.
        pairs = [(kind, group) for kind in stores for group in groups]
        print(f"{len(pairs)} runs, {args.jobs or len(pairs)} at once, each in a network namespace")
        env = {**os.environ, "CIDADE_CONFORMANCE_POSTGRES": pg_socket or pg}
        out.mkdir(parents=True, exist_ok=True)
        running: list[subprocess.Popen] = []
        try:
            for kind, group in pairs:
                while args.jobs and sum(child.poll() is None for child in running) >= args.jobs:
                    time.sleep(0.5)
                command = [sys.executable, __file__, "--in-namespace", "--stores", kind]
                command += ["--groups", group, "--out", str(out)]
                if areas:
                    command += ["--areas", ",".join(areas)]
                running.append(subprocess.Popen(["unshare", "--net", "--", *command], env=env))
            for child in running:
                child.wait()
        finally:
            for child in running:
                if child.poll() is None:
                    child.terminate()
            for child in running:
                child.wait()
    else:
        for kind in stores:
            run_store(kind, groups, out, pg, isolated=False, areas=areas)
    results = []
    for kind in stores:
        for group in groups:
            path = out / kind / group / "result.json"
            if path.exists():
                results.append(Result(**json.loads(path.read_text())))
            else:
                results.append(Result(kind, group, 0, 0, 0, "", "no result (see the output)"))
    for r in results:
        print(f"\n== {r.store}, {r.group} ({', '.join(GROUPS[r.group])})")
        print(r.summary or r.error)
    print(f"\nconformance, in {time.monotonic() - started:.0f} s (logs in {out}):")
    for r in results:
        print("  " + r.line())
    passed = {(r.store, r.group): r.passed for r in results if not r.error}
    if args.raise_floor:
        text = args.floor.read_text() if args.floor.exists() else ""
        args.floor.parent.mkdir(parents=True, exist_ok=True)
        args.floor.write_text(raised_floor(text, passed))
        print(f"floor raised where more passed: {args.floor}")
    floor = read_floor(args.floor)
    failures = [r.line() for r in results if r.error] + below_floor(floor, passed)
    if failures:
        print(f"\nFAILED (the floor is {args.floor}):")
        for line in failures:
            print("  " + line)
        return 1
    print(f"every run at or above its floor ({args.floor})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
