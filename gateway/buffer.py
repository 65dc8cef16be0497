"""Store-and-forward: an on-disk outbox (SQLite in WAL mode) in front of the broker.

Every telemetry and event message is written here, with its machine, session and seq, *before*
it is published, and deleted only when the broker acknowledges it (PUBACK). After a broker outage
or a gateway restart (even SIGKILL) the rows still here are the backlog, replayed in ``id``
order per machine; rows of a session other than the machine's live one are sent with
``historical: true`` (see :func:`mark_historical`) and keep their original session and seq.

Durability: WAL with ``synchronous=NORMAL`` survives a process crash (every committed row is in
the WAL file); ``synchronous=FULL`` also survives power loss at the cost of an fsync per row.

Bound: at most ``max_messages`` rows. When full, policy ``drop_oldest`` (the default) deletes the
oldest row of the same machine (the freshest data is worth most and ingest records the gap),
``drop_newest`` refuses the new row. Either way the drop is counted and logged. A message the
broker refuses (a PUBACK failure code, e.g. not authorised) moves to ``dead_letter`` so it cannot
block the queue.

The connection is used from the event-loop thread only; each call is a short local transaction.
"""

from __future__ import annotations

__all__ = ["DiskQueue", "Row", "mark_historical"]

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.errors import StoreError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    machine  TEXT    NOT NULL,   -- site/machine
    session  TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    topic    TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    created  REAL    NOT NULL    -- gateway clock (arrival side), seconds since the epoch
);
CREATE INDEX IF NOT EXISTS outbox_machine ON outbox (machine, id);
CREATE TABLE IF NOT EXISTS dead_letter (
    id       INTEGER PRIMARY KEY,
    machine  TEXT NOT NULL,
    session  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    topic    TEXT NOT NULL,
    payload  BLOB NOT NULL,
    reason   TEXT NOT NULL,
    created  REAL NOT NULL
);
"""

_LIVE = b'"historical":false'
_HISTORICAL = b'"historical":true'


def mark_historical(payload: bytes) -> bytes:
    """The payload with ``historical`` set true (payloads are our own compact JSON)."""
    return payload.replace(_LIVE, _HISTORICAL, 1)


@dataclass(frozen=True, slots=True)
class Row:
    """One stored message."""

    id: int
    machine: str
    session: str
    seq: int
    topic: str
    payload: bytes


class DiskQueue:
    """The outbox. ``dropped`` counts rows lost to the bound, ``dead`` rows the broker refused."""

    def __init__(
        self,
        path: Path,
        *,
        max_messages: int = 1_000_000,
        policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest",
        synchronous: Literal["normal", "full"] = "normal",
    ) -> None:
        self.path = path
        self.max_messages = max_messages
        self.policy = policy
        self.dropped = 0
        self.dead = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            self._count = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the disk buffer {path}: {exc}") from exc

    def close(self) -> None:
        """Close the database (rows stay for the next start)."""
        self._db.close()

    def __len__(self) -> int:
        return self._count

    def append(
        self, machine: str, session: str, seq: int, topic: str, payload: bytes
    ) -> int | None:
        """Store a message; its row id, or ``None`` if the bound refused it (``drop_newest``)."""
        if self._count >= self.max_messages:
            if self.policy == "drop_newest":
                self.dropped += 1
                self._log_drop(machine)
                return None
            victim = (
                self._db.execute(
                    "SELECT id FROM outbox WHERE machine = ? ORDER BY id LIMIT 1", (machine,)
                ).fetchone()
                or self._db.execute("SELECT id FROM outbox ORDER BY id LIMIT 1").fetchone()
            )
            if victim is not None:
                self._db.execute("DELETE FROM outbox WHERE id = ?", (victim[0],))
                self._count -= 1
                self.dropped += 1
                self._log_drop(machine)
        cur = self._db.execute(
            "INSERT INTO outbox (machine, session, seq, topic, payload, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (machine, session, seq, topic, payload, time.time()),
        )
        self._count += 1
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _log_drop(self, machine: str) -> None:
        if self.dropped <= 10 or self.dropped % 1000 == 0:
            log.error(
                "disk buffer full (%d messages, policy %s): dropped a message of %s (%d so far)",
                self.max_messages,
                self.policy,
                machine,
                self.dropped,
            )

    def pending(
        self, machine: str, *, after: int, limit: int, session: str, live: bool
    ) -> list[Row]:
        """Up to ``limit`` rows of ``machine`` after row ``after``, in order: those of
        ``session`` (``live``) or of every other session (the historical backlog)."""
        op = "=" if live else "<>"
        rows = self._db.execute(
            f"SELECT id, machine, session, seq, topic, payload FROM outbox"  # noqa: S608 (op fixed)
            f" WHERE machine = ? AND id > ? AND session {op} ? ORDER BY id LIMIT ?",
            (machine, after, session, limit),
        ).fetchall()
        return [Row(*r) for r in rows]

    def ack(self, row_id: int) -> None:
        """The broker has the message: delete it."""
        cur = self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        self._count -= cur.rowcount

    def dead_letter(self, row_id: int, reason: str) -> None:
        """The broker refused the message: move it aside so it cannot block the queue."""
        self._db.execute("BEGIN")
        self._db.execute(
            "INSERT OR REPLACE INTO dead_letter"
            " SELECT id, machine, session, seq, topic, payload, ?, created"
            " FROM outbox WHERE id = ?",
            (reason, row_id),
        )
        cur = self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        self._db.execute("COMMIT")
        self._count -= cur.rowcount
        self.dead += 1

    def count(self, machine: str | None = None) -> int:
        """Rows waiting (for one machine, or all)."""
        if machine is None:
            return self._count
        return int(
            self._db.execute(
                "SELECT count(*) FROM outbox WHERE machine = ?", (machine,)
            ).fetchone()[0]
        )
