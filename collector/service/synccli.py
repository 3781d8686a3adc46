"""``collector db sync -c FILE``: one MOR MySQL → SQLite sync, as the daemon runs it.

Prints one line per table (added / changed / removed / rows) and one warning line per skipped MOR row
on stderr; exit 0, or one error line and exit 2 (config error, MySQL unreachable, schema not MOR's …).
Credentials are never printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from collector.refdata.mor_sync import sync_once
from collector.service.config import ConfigError, load_settings

__all__ = ["add_sync_parser", "cmd_sync"]


def add_sync_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sync", help="sync reference data once from MOR's MySQL database ([refdata] source = mysql)",
                       description="Read MOR's database (read-only) as configured in [refdata] and write it "
                                   "into the configured SQLite file through the validated importer "
                                   "(replace mode). Rows that break an import rule are skipped and listed.")
    p.add_argument("--config", "-c", type=Path, default=Path("/etc/collector/config.ini"),
                   help="INI configuration (default: %(default)s)")
    p.set_defaults(func=cmd_sync)


def _fail(message: str) -> int:
    sys.stderr.write(f"collector db sync: error: {message}\n")
    return 2


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    if not settings.refdata.mysql:
        return _fail(f"{args.config}: [refdata] source is {settings.refdata.source!r}: nothing to sync "
                     "(set source = mysql)")
    report = sync_once(settings.refdata, settings.database)
    if not report.ok:
        return _fail(report.error)
    for s in report.skipped:
        sys.stderr.write(f"collector db sync: warning: skipped {s.table} id {s.id}: {s.reason}\n")
    width = max(len(t) for t in report.tables)
    for table, c in report.tables.items():
        print(f"{table:<{width}}  added {c.added:>6}  changed {c.changed:>6}  removed {c.removed:>6}  "
              f"rows {c.total:>7}")
    print(f"{settings.database}: synced from {report.source} in {report.seconds:.2f}s, "
          f"{len(report.skipped)} row(s) skipped")
    return 0
