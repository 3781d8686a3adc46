"""``collector db …``: create, fill and dump the reference database.

``register(subparsers)`` adds the ``db`` command to the main CLI; every leaf parser sets ``func`` to a
handler ``(args) -> exit code`` (0 ok, 2 invalid input with one line on stderr, 1 database failure).
``python -m collector.service.dbcli db …`` runs it standalone.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from api.passwords import hash_password
from collector.refdata.importer import import_file, load_demo
from collector.refdata.local_passwords import LocalPasswords
from collector.refdata.store import DEFAULT_DB_PATH, REF_TABLES, SCHEMA_VERSION, RefDataError, export_db, init_db
from collector.service.logsetup import MASK

__all__ = ["MAX_PASSWORD", "cmd_demo", "cmd_export", "cmd_import", "cmd_init", "cmd_set_password", "main", "register"]

Handler = Callable[[argparse.Namespace], int]

_DB_HELP = f"SQLite database file (default: {DEFAULT_DB_PATH}); created with its directory if missing"
_IMPORT_EPILOG = f"""\
file formats:
  JSON  an object {{"<table>": [{{"<column>": value, ...}}, ...], ...}}; numbers that are identifiers
        (DIDs, prefixes, extensions, peer names) are strings, ids and flags are integers
  CSV   one table per file, named after it (devices.csv, dids.csv …), a header line of column names

tables: {", ".join(REF_TABLES)}

Rows are upserted by id (--replace empties the tables named in the file first). The file is checked
as a whole (types, required columns, references, duplicates) and imported in one transaction: one bad
row rejects the file, naming table, row and reason, and nothing is written.
"""


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", default=None, help=_DB_HELP)
    parser.add_argument("-c", "--config", metavar="FILE", type=Path, default=None,
                        help="use the database of this configuration file ([database] path)")


def _db_path(command: str, args: argparse.Namespace) -> str | Path | int:
    """``--db``, or the ``[database] path`` of ``-c FILE``, or the default; an exit code on error."""
    if args.db is not None and args.config is not None:
        return _fail(command, "give either --db PATH or -c FILE, not both", 2)
    if args.config is not None:
        from collector.service.config import ConfigError, load_settings

        try:
            return load_settings(args.config).database
        except ConfigError as exc:
            return _fail(command, f"config error: {exc}", 2)
    return args.db if args.db is not None else DEFAULT_DB_PATH


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``db init|import|demo|export|set-password`` (and ``sync``) to a CLI's subparsers; returns the ``db``
    parser."""
    db = subparsers.add_parser(
        "db", help="reference data database: init, import, demo, export, set-password, sync",
        description="Manage the reference data (users, devices, providers, DIDs, destinations, "
                    "localization rules …) the collector enriches live calls with. Tables and columns "
                    "follow MOR's names.")
    sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create the database or apply pending schema migrations",
                       description=f"Create the database file (WAL mode) or migrate it to schema version "
                                   f"{SCHEMA_VERSION}. Safe to run any number of times.")
    _add_db(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import", help="import a JSON or CSV file of reference data (all or nothing)",
                       description="Validate FILE and import it in one transaction.",
                       epilog=_IMPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="a .json file {table: [rows]} or a <table>.csv file")
    p.add_argument("--replace", action="store_true",
                   help="delete the existing rows of the tables present in FILE before importing")
    _add_db(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("demo", help="load the bundled demo data (matches the bundled AMI traces)",
                       description="Write the demo reference data: admin (id 0, API secret "
                                   "'demo-admin-secret'), a reseller, users, SIP 101/102, IAX2 201, "
                                   "providers prov1/prov2, DIDs 37052000001-3/7, destinations for "
                                   "PHL/LTU/GBR/DEU, Global localization of 00 numbers. Upserts by id.")
    _add_db(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="dump every reference table as JSON (re-importable)",
                       description="Write all reference tables as one JSON object that `db import` "
                                   "accepts, to FILE or standard output. API secret keys are masked "
                                   "unless --with-secrets is given (which will not write to a terminal).")
    p.add_argument("--out", metavar="FILE", help="write to FILE (atomically, mode 0600) instead of standard output")
    p.add_argument("--with-secrets", action="store_true",
                   help=f"include API secret keys (masked as {MASK!r} otherwise); refused on a terminal")
    _add_db(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("set-password", help="set (or --delete) a user's local password for the v2 login",
                       description="Store a salted scrypt hash of a password for USER (a user of the reference "
                                   "data) for POST /billing/api/v2/authentication/login. It wins over the "
                                   "password MOR keeps for that user; neither `db import` nor the MOR sync touch "
                                   "it. The password is read from standard input when that is not a terminal "
                                   "(one line), else asked twice without echo. Takes effect at once.")
    p.add_argument("user", metavar="USER", help="the username (users.username)")
    p.add_argument("--delete", action="store_true",
                   help="remove USER's local password instead (MOR's password, if any, applies again)")
    _add_db(p)
    p.set_defaults(func=cmd_set_password)

    from collector.service.synccli import add_sync_parser  # db sync (MOR MySQL)
    add_sync_parser(sub)
    return db


def _fail(command: str, message: str, code: int) -> int:
    sys.stderr.write(f"collector db {command}: error: {message}\n")
    return code


def _run(command: str, action: Callable[[Path | str], None], args: argparse.Namespace) -> int:
    db = _db_path(command, args)
    if isinstance(db, int):
        return db
    args.db = db
    try:
        action(db)
    except (RefDataError, OSError) as exc:
        return _fail(command, str(exc).replace("\n", " "), 2)
    except sqlite3.Error as exc:
        return _fail(command, f"database error: {exc}", 1)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    def action(db: Path | str) -> None:
        version = init_db(db)
        print(f"{db}: schema version {version}")
    return _run("init", action, args)


def cmd_import(args: argparse.Namespace) -> int:
    def action(db: Path | str) -> None:
        counts = import_file(db, args.file, replace=args.replace)
        summary = ", ".join(f"{t} {n}" for t, n in counts.items()) or "nothing"
        print(f"{db}: imported {summary} from {args.file}")
    return _run("import", action, args)


def cmd_demo(args: argparse.Namespace) -> int:
    def action(db: Path | str) -> None:
        counts = load_demo(db)
        print(f"{db}: demo data loaded ({sum(counts.values())} rows)")
    return _run("demo", action, args)


def cmd_export(args: argparse.Namespace) -> int:
    if args.with_secrets and not args.out and sys.stdout.isatty():
        return _fail("export", "refusing to write secrets to a terminal: use --out FILE or a pipe", 2)
    def action(db: Path | str) -> None:
        data = export_db(db)
        if not args.with_secrets:
            for user in data.get("users", []):
                for key in ("api_secret_key", "password"):
                    if user.get(key):
                        user[key] = MASK
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        if not args.out:
            sys.stdout.write(text)
            return
        out = Path(args.out)
        fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return _run("export", action, args)


MAX_PASSWORD = 1024  # characters; a login's whole Authorization header is at most 4096


class _PasswordRefused(Exception):
    pass


def _read_password() -> str:
    """One line of standard input (a pipe, a file), or twice from the terminal without echo."""
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if first and getpass.getpass("Repeat it: ") != first:
            raise _PasswordRefused("the two passwords differ; nothing changed")
    else:
        first = sys.stdin.readline(MAX_PASSWORD + 2).rstrip("\r\n")
    if not first:
        raise _PasswordRefused("refusing an empty password; nothing changed")
    if len(first) > MAX_PASSWORD:
        raise _PasswordRefused(f"the password is longer than {MAX_PASSWORD} characters; nothing changed")
    return first


def cmd_set_password(args: argparse.Namespace) -> int:
    db = _db_path("set-password", args)
    if isinstance(db, int):
        return db
    user: str = args.user
    store = LocalPasswords(db)
    try:
        if args.delete:
            if store.delete(user):
                print(f"{db}: local password of {user!r} removed")
                return 0
            if not store.user_exists(user):
                return _fail("set-password", f"unknown user {user!r} (and no local password to remove)", 2)
            print(f"{db}: {user!r} had no local password; nothing changed")
            return 0
        if not store.user_exists(user):
            return _fail("set-password", f"unknown user {user!r}: not in the users table of {db} "
                                         "(import or sync it first)", 2)
        store.set(user, hash_password(_read_password()))
    except _PasswordRefused as exc:
        return _fail("set-password", str(exc), 2)
    except (RefDataError, OSError) as exc:
        return _fail("set-password", str(exc).replace("\n", " "), 2)
    except sqlite3.Error as exc:
        return _fail("set-password", f"database error: {exc}", 1)
    print(f"{db}: password set for {user!r}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collector")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    handler: Handler = args.func
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
