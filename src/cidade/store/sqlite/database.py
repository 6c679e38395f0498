"""One SQLite database: a single writer thread with group commit, and reader connections.

Datasette's pattern: writes go through a queue to one thread that owns the only write connection,
so there is never lock contention between writers. That thread takes every write waiting in the
queue and runs them in ONE transaction, each in its own SAVEPOINT (a failed write rolls back only
itself), then commits once: with ``synchronous=FULL`` every acknowledged write is on disk, and the
fsync is shared by everyone who was waiting (group commit).

Writes outside a chain (an operator's through the API) are not held behind a chain's (a device
batch of thousands of messages): when both wait, the former are committed first, on their own.

Reads use WAL snapshots on other connections and never wait for the writer.

Nothing of a connection leaves the thread that owns it. A cursor holds a prepared statement
that its connection caches and hands to the next cursor running the same SQL; a cursor
finalised on another thread (the last reference to a write's result dropped on the event loop)
resets that statement, and clears its in-use mark, while the owner runs it: SQLite then
answers the owner's next bind "bad parameter or other API misuse" (issue 14: audit rows lost
under concurrent requests). So the writer's and the readers' connections remember every cursor
made on them and close those still alive on their own thread before a function's result
leaves it (``OwnedConnection.release``), and a function whose result is itself a cursor, a
connection or a blob is refused: write and read functions return plain data.

Checkpoints (copying the WAL's pages into the database file) run on a thread of their own: left
to SQLite, the commit that finds the WAL past 1,000 pages runs one, and at device rates that was
a third of the commit's time, on the writer's path. The writer checkpoints itself only past
``WRITER_CHECKPOINT_PAGES``, should the checkpointer fall that far behind.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cidade.store.base import WriteChain

T = TypeVar("T")

_STOP = object()
MAX_GROUP = 256  # writes committed together at most
WRITER_CHECKPOINT_PAGES = 16_384  # WAL pages (64 MiB) past which a commit checkpoints itself
# Seconds the checkpointer rests after each checkpoint: the commits meanwhile share the next
# one, and a page they all rewrote (an entity's, a series') is copied once, not once each.
CHECKPOINT_PAUSE = 0.5


# What a write or read function may not return: live parts of a connection.
_CONNECTION_PARTS = (sqlite3.Connection, sqlite3.Cursor, sqlite3.Blob)


class OwnedConnection(sqlite3.Connection):
    """A connection used by one thread (the writer's, a reader's) that remembers the cursors
    made on it, so that its thread closes them (``release``) before anything a function made
    with it is handed to another thread (the module's docstring says why)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._made: list[weakref.ref[sqlite3.Cursor]] = []

    def cursor(self, factory: Any = sqlite3.Cursor) -> Any:
        made = super().cursor(factory)
        self._made.append(weakref.ref(made))
        return made

    # The shortcuts make their cursor through ``cursor`` so that it is remembered too.
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        return self.cursor().executescript(script)

    def release(self) -> None:
        """Close every cursor made so far that is still referenced (by a result, or by an
        exception's traceback): it then holds no statement, wherever it is finalised."""
        made, self._made = self._made, []
        for ref in made:
            cursor = ref()
            if cursor is not None:
                cursor.close()


def _plain(value: T) -> T:
    """``value``, unless it is part of a connection, which must not leave its thread."""
    if isinstance(value, _CONNECTION_PARTS):
        raise TypeError(
            f"a store function returned a {type(value).__name__}: write and read functions"
            " return plain data (a row count, rows), never a cursor or a connection"
        )
    return value


def _settle(items: list[tuple[asyncio.Future, bool, Any]]) -> None:
    """In the waiters' event loop: hand each write its result (or its error)."""
    for fut, ok, value in items:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _connect(
    path: str, setup: Callable[[sqlite3.Connection], None], factory: type[sqlite3.Connection]
) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=30, factory=factory
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is acknowledged only once it is durable (WAL fsynced), also on power loss.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    # A WAL grown past this while checkpoints lagged goes back to this size once it starts over.
    conn.execute(f"PRAGMA journal_size_limit={64 << 20}")
    setup(conn)
    return conn


class Database:
    def __init__(self, path: str, setup: Callable[[sqlite3.Connection], None]) -> None:
        if path == ":memory:":
            # A shared in-memory database, so the writer and the readers see the same data.
            path = f"file:cidade-mem-{id(self)}?mode=memory&cache=shared"
        self.path = path
        self._setup = setup
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=3, thread_name_prefix="sqlite-read")
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None
        self._checkpointer: threading.Thread | None = None
        self._committed = threading.Event()  # a commit the checkpointer has not seen yet
        self._stopping = False
        self._stop_pause = threading.Event()  # ends the checkpointer's pause at stop
        # Rollbacks (of a write's savepoint, or of a whole transaction) so far: what the writer
        # remembers of the database must be forgotten once one happens (SeriesNumbers).
        self.rollbacks = 0

    def _new_connection(
        self, factory: type[sqlite3.Connection] = OwnedConnection
    ) -> sqlite3.Connection:
        """A connection; an OwnedConnection unless it is used on the event loop's thread
        alone (``read_now``) or runs no functions (the checkpointer's)."""
        uri = self.path.startswith("file:")
        if uri:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                uri=True,
                timeout=30,
                factory=factory,
            )
            conn.execute("PRAGMA busy_timeout=30000")
            self._setup(conn)
        else:
            conn = _connect(self.path, self._setup, factory)
        with self._lock:
            self._all.append(conn)
        return conn

    def _owned(self) -> OwnedConnection:
        conn = self._new_connection(OwnedConnection)
        assert isinstance(conn, OwnedConnection)
        return conn

    @property
    def exists(self) -> bool:
        """Whether the database is there already (an in-memory one always is)."""
        return self.path.startswith("file:") or Path(self.path).is_file()

    def start(self, init: Callable[[sqlite3.Connection], None]) -> None:
        if not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._owned()
        init(conn)
        self._stopping = False
        self._stop_pause.clear()
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="sqlite-writer", daemon=True
        )
        self._writer.start()
        self._inline = self._new_connection(sqlite3.Connection)
        if not self.path.startswith("file:"):  # shared in-memory databases have no WAL
            conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop,
                args=(self._new_connection(sqlite3.Connection),),
                name="sqlite-checkpoint",
                daemon=True,
            )
            self._checkpointer.start()

    @property
    def started(self) -> bool:
        return self._writer is not None

    def stop(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
            self._writer = None
        if self._checkpointer is not None:
            self._stopping = True
            self._stop_pause.set()
            self._committed.set()
            self._checkpointer.join()
            self._checkpointer = None
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoint_loop(self, conn: sqlite3.Connection) -> None:
        """PASSIVE checkpoints after commits: they copy what no reader still needs and never
        make the writer wait; the WAL starts over once one has copied everything."""
        while True:
            self._committed.wait()
            if self._stopping:
                return
            self._committed.clear()
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                pass  # busy or closing: the next commit asks again
            # A pause that stop() ends at once: a store closes without waiting it out.
            if self._stop_pause.wait(CHECKPOINT_PAUSE):
                return

    # -- writes ---------------------------------------------------------------------------------

    def _write_loop(self, conn: OwnedConnection) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
            # Writes outside a chain (an operator's through the API, the server's own) go first,
            # in a transaction of their own, when chained writes (a device batch of thousands of
            # messages) wait beside them: committed together, they would wait for the batch.
            # Chained writes keep their order; none of these was acknowledged yet.
            urgent = [item for item in group if item[3] is None]
            if urgent and len(urgent) < len(group):
                self._run_group(conn, urgent)
                group = [item for item in group if item[3] is not None]
            self._run_group(conn, group)
            if stop:
                return

    def _run_group(
        self, conn: OwnedConnection, group: list[tuple[Callable, Any, Any, Any]]
    ) -> None:
        """One transaction for the whole group, a savepoint per write; then every waiter is
        told, with one wake-up per event loop rather than one per write (at a thousand writes
        a second the wake-ups alone cost a tenth of a core)."""
        results: list[tuple[Any, Any, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, loop, fut, chain in group:
                # A caller that gave up waiting (cancelled, e.g. at shutdown): skip its write,
                # and the later ones of its chain.
                if fut.cancelled():
                    if chain is not None and chain.broken is None:
                        chain.broken = asyncio.CancelledError()
                    continue
                refusal = chain.refusal() if chain is not None else None
                if refusal is not None:
                    results.append((loop, fut, False, refusal))
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    value = _plain(fn(conn))
                except BaseException as exc:
                    self.rollbacks += 1
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((loop, fut, False, exc))
                    if chain is not None:
                        chain.broken = exc
                else:
                    conn.execute("RELEASE op")
                    results.append((loop, fut, True, value))
            conn.execute("COMMIT")
            self._committed.set()
        except BaseException as exc:  # the commit itself failed: nobody's write is acknowledged
            self.rollbacks += 1
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(loop, fut, False, exc) for _, loop, fut, _ in group]
            for *_, chain in group:
                if chain is not None and chain.broken is None:
                    chain.broken = exc
        conn.release()  # before any result, or exception, leaves this thread
        by_loop: dict[Any, list[tuple[Any, bool, Any]]] = {}
        for loop, fut, ok, value in results:
            by_loop.setdefault(loop, []).append((fut, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting any more

    async def write(
        self, fn: Callable[[sqlite3.Connection], T], chain: WriteChain | None = None
    ) -> T:
        """Run ``fn(conn)`` in the writer thread inside a transaction; return once committed.
        With a ``chain``, only if the chain's writes queued before it were (store/base.py).
        ``fn`` returns plain data: one that returns a cursor or a connection is refused
        (TypeError, its changes rolled back), and any cursor it made is closed before its
        result leaves the writer thread."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, loop, fut, chain))
        return await fut

    # -- reads ----------------------------------------------------------------------------------

    def _reader(self) -> OwnedConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._owned()
        return conn

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader()
        try:
            return _plain(fn(conn))
        finally:
            conn.release()  # before the result, or an exception, leaves this reader thread

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader thread (for queries that may take a while); it returns
        plain data, as a write function does."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read (an indexed point lookup) right here, on the event loop's thread:
        cheaper than a thread hop for reads that take microseconds."""
        assert self._inline is not None
        return fn(self._inline)
