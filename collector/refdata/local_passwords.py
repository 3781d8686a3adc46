"""``local_passwords``: the v2 login's own password hashes, one per username, in the reference database.

Why a table of its own: users imported from files have no MOR password, and an operator may want to
override MOR's for anyone; the MOR sync and the importer rewrite the reference tables wholesale, so the
hashes live where neither of them writes (migration 5 creates the table). Values are opaque strings here
(``api.passwords`` makes and checks them); this module is the I/O only.

Reads are read-only connections, made per lookup (a login is rare, a primary-key lookup is ~0.1 ms), so
``collector db set-password`` takes effect at once, without a reload; a database not yet migrated to
version 5 (the table is missing) simply has no local passwords.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from collector.refdata.store import open_db

__all__ = ["LocalPasswords"]


@dataclass(frozen=True, slots=True)
class LocalPasswords:
    path: str | Path

    def get(self, username: str) -> str | None:
        """The stored hash of ``username``, or None (no entry, no table yet, no database file)."""
        p = Path(self.path)
        if not p.is_file():
            return None
        conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            row = conn.execute("SELECT hash FROM local_passwords WHERE username = ?", (username,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        finally:
            conn.close()
        return str(row[0]) if row is not None and row[0] else None

    def user_exists(self, username: str) -> bool:
        """Whether the reference data (imported or synced from MOR) has this username."""
        db = open_db(self.path)
        try:
            return db.execute("SELECT 1 FROM users WHERE username = ?", [username]).fetchone() is not None
        finally:
            db.close()

    def set(self, username: str, hashed: str) -> None:
        db = open_db(self.path)  # creates / migrates: the table exists afterwards
        try:
            with db.conn:
                db.execute("INSERT OR REPLACE INTO local_passwords (username, hash) VALUES (?, ?)", [username, hashed])
        finally:
            db.close()

    def delete(self, username: str) -> bool:
        """Remove the entry; False when there was none."""
        db = open_db(self.path)
        try:
            with db.conn:
                cur = db.execute("DELETE FROM local_passwords WHERE username = ?", [username])
            return cur.rowcount > 0
        finally:
            db.close()
