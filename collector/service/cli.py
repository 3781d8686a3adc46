"""``collector`` command line: run | demo | replay | record | timeline | check-config | db …

Each subcommand parses its arguments, builds what it needs, awaits one entry point and returns an exit
status: 0 ok, 1 runtime failure, 2 bad configuration or usage (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from importlib import resources
from pathlib import Path
from secrets import token_urlsafe
from typing import TYPE_CHECKING

from collector import __version__
from collector.service.config import ConfigError, load_settings
from collector.service.logsetup import setup_logging

if TYPE_CHECKING:  # the daemon pulls in aiohttp: imported late, by the commands that run it
    from collector.service.daemon import Daemon

__all__ = ["main", "build_parser"]

log = logging.getLogger("collector.service.cli")

DEMO_TRACE = "demo.ami.gz"


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collector",
        description="Live call collector for Asterisk (AMI) serving MOR's active_calls_get API.",
        epilog="Run 'collector COMMAND --help' for the options of one command.")
    p.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="run the daemon (AMI sessions + HTTP API)",
                       description="Run the daemon with a configuration file (see config.example.ini). "
                                   "SIGTERM/SIGINT stop it gracefully, SIGHUP reloads reference data.")
    r.add_argument("--config", "-c", type=Path, default=Path("/etc/collector/config.ini"),
                   help="INI configuration; conf.d/*.ini beside it is merged in (default: %(default)s)")

    c = sub.add_parser("check-config", help="validate a configuration file and exit",
                       description="Validate the configuration: exit 0 when good, 2 with one line naming "
                                   "the section and key when not. Secrets are never printed.")
    c.add_argument("--config", "-c", type=Path, default=Path("/etc/collector/config.ini"))

    d = sub.add_parser("demo", help="try it: replay a bundled real trace as a live Asterisk and run the daemon",
                       description="Start a replay AMI server on a bundled real Asterisk trace (looped), "
                                   "load the demo reference data into a fresh SQLite file and run the "
                                   "daemon against it; prints ready-to-paste curl lines.")
    d.add_argument("--dir", type=Path, default=Path("var/demo"), help="working directory (default: %(default)s)")
    d.add_argument("--port", type=int, default=8080, help="HTTP API port (default: %(default)s)")
    d.add_argument("--trace", type=Path, action="append",
                   help="trace file(s) to replay instead of the bundled one (.ami or .ami.gz)")
    d.add_argument("--speed", type=float, default=1.0, help="replay speed factor (default: %(default)s)")

    rp = sub.add_parser("replay", help="serve recorded AMI traffic as a live AMI server",
                        description="Serve .ami traces as a live Asterisk Manager Interface: Login, Events, "
                                    "Filter, Ping, Logoff and CoreShowChannels (answered from the channels up "
                                    "at that point of the trace). Several files are successive sessions.")
    rp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    rp.add_argument("--listen", type=_listen, default=("127.0.0.1", 5038), metavar="HOST:PORT",
                    help="address to listen on (default: 127.0.0.1:5038)")
    speed = rp.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, default=1.0, help="timing factor over the trace's Timestamps")
    speed.add_argument("--fast", action="store_true", help="send as fast as the client reads")
    rp.add_argument("--loop", action="store_true", help="start again after the last file, with fresh ids")
    rp.add_argument("--username", help="accept only this AMI username (default: any)")
    rp.add_argument("--secret", help="and this secret")

    rc = sub.add_parser("record", help="capture a raw AMI stream to a file (for bug reports and tests)",
                        description="Log in and write the AMI stream exactly as received (banner first, "
                                    "blocks verbatim) until interrupted.")
    rc.add_argument("--host", required=True)
    rc.add_argument("--port", type=int, default=5038)
    rc.add_argument("--username", required=True)
    rc.add_argument("--secret", required=True)
    rc.add_argument("--events", default="on", help="Login Events mask (default: on = everything)")
    rc.add_argument("--out", required=True, type=Path)

    t = sub.add_parser("timeline", help="run traces through the tracker offline; JSON lines of the call table",
                       description="Print {\"t\", \"calls\": [...]} per step of trace time: the call table "
                                   "as it stood then (answer_time as Unix time).")
    t.add_argument("files", nargs="+", type=Path, metavar="FILE")
    t.add_argument("--step", type=float, default=0.5, help="seconds of trace time per line (default: 0.5)")
    t.add_argument("--server-id", type=int, default=1, help="server_id to tag calls with (default: 1)")

    from collector.service.dbcli import register as register_db
    register_db(sub)
    return p


async def _run(config: Path) -> int:
    from collector.service.daemon import run_daemon

    settings = load_settings(config)
    setup_logging(settings.collector.log_level)
    return await run_daemon(settings)


async def _demo(args: argparse.Namespace) -> int:
    from collector.refdata.importer import load_demo
    from collector.service.config import parse_settings
    from collector.service.daemon import run_daemon
    from collector.tools.replay import ReplayOptions, ReplayServer

    setup_logging("INFO")
    workdir: Path = args.dir
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "collector.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    load_demo(db)
    # the v2 login needs a password: a fresh one for the demo admin at every start, printed below
    from api.passwords import hash_password
    from collector.refdata.local_passwords import LocalPasswords

    demo_password = token_urlsafe(12)
    LocalPasswords(db).set("admin", hash_password(demo_password))
    if args.trace:
        traces = list(args.trace)
    else:
        traces = [Path(str(resources.files("collector") / "data" / DEMO_TRACE))]
    # A long generated AMI secret: a short one ("demo") is not worth copying into a real config, and
    # the log redaction safety net only masks secrets of at least MIN_SECRET_LEN characters.
    ami_secret = token_urlsafe(18)
    replay = ReplayServer(traces, host="127.0.0.1", port=0,
                          options=ReplayOptions(speed=args.speed, loop_forever=True, username="demo",
                                                secret=ami_secret))
    ami_port = await replay.start()
    ini = (f"[collector]\nreconcile_interval = 60\n\n[api]\nlisten = 127.0.0.1\nport = {args.port}\n\n"
           f"[database]\npath = {db}\n\n[server:demo]\nhost = 127.0.0.1\nport = {ami_port}\n"
           f"username = demo\nsecret = {ami_secret}\nserver_id = 1\n\n"
           # the replay server answers Hangup as Asterisk does, so the page's hang-up button works here
           "[hangup]\nenabled = yes\n")
    (workdir / "demo.ini").write_text(ini)
    settings = parse_settings(ini, source=str(workdir / "demo.ini"))
    started: asyncio.Future[Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_daemon(settings, started))
    try:
        daemon = await started
    except Exception:
        await replay.close()
        return await task
    _print_demo_help(daemon, args.port, demo_password)
    try:
        return await task
    finally:
        await replay.close()


def _print_demo_help(daemon: Daemon, port: int, admin_password: str = "") -> None:
    from api.auth import expected_hash  # the API's own hash rule; imported late (aiohttp) like the daemon
    refs = daemon.refs
    assert refs is not None  # the daemon has loaded reference data before it reports started
    url = f"http://127.0.0.1:{port}/billing/api/active_calls_get"
    lines = ["", "Demo running: a real Asterisk trace replayed as a live AMI server, looped.", ""]
    admin = next((u for u in refs.data.users if u.usertype == "admin"), None)
    if admin is not None and admin.api_secret_key:
        lines += [f"  Live page:  http://127.0.0.1:{port}/#u={admin.username}&hash="
                  f"{expected_hash(admin.username, admin.api_secret_key)}", ""]
    for user in refs.data.users:
        owner = refs.owner_of(user)
        if owner is None or not owner.api_secret_key or user.usertype == "accountant":
            continue
        h = expected_hash(user.username, owner.api_secret_key)
        lines.append(f"  # as {user.usertype} {user.username!r}:")
        lines.append(f"  curl -s -X POST '{url}?u={user.username}&hash={h}'")
    lines.append("  # only answered calls, as the first user above: add &s_status=answered")
    if admin_password:
        lines += ["  # v2 login as 'admin' (the demo's password, new at every start): a token for",
                  "  # 'Authorization: Bearer <token>' on the lines above instead of u and hash",
                  f"  curl -s -X POST -u 'admin:{admin_password}' "
                  f"'http://127.0.0.1:{port}/billing/api/v2/authentication/login'",
                  "  # hang up the call with id N (hang-up is enabled in the demo; the trace replays on)",
                  f"  curl -s -X DELETE -H 'Authorization: Bearer <token>' "
                  f"'http://127.0.0.1:{port}/billing/api/v2/active_calls/N'"]
    lines += [f"  curl -s http://127.0.0.1:{port}/status", f"  curl -s http://127.0.0.1:{port}/metrics",
              "", "Ctrl-C stops it.", ""]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


async def _replay(args: argparse.Namespace) -> int:
    from collector.tools.replay import serve

    setup_logging("INFO")
    host, port = args.listen
    await serve(list(args.files), host=host, port=port, speed=args.speed, fast=args.fast,
                loop_forever=args.loop, username=args.username, secret=args.secret)
    return 0


async def _record(args: argparse.Namespace) -> int:
    from collector.tools.record import record

    setup_logging("INFO")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # Ctrl-C: Logoff, read to the Goodbye, flush
    n = await record(args.host, args.port, args.username, args.secret, args.out, events=args.events, stop=stop)
    log.info("recorded bytes=%d file=%s", n, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return asyncio.run(_run(args.config))
        if args.command == "check-config":
            settings = load_settings(args.config)
            enabled = sum(1 for s in settings.servers if s.enabled)
            extra = f", refdata {settings.refdata.describe()}" if settings.refdata.mysql else ""
            print(f"{args.config}: ok ({enabled} AMI server(s) enabled, database {settings.database}{extra})")
            return 0
        if args.command == "demo":
            return asyncio.run(_demo(args))
        if args.command == "replay":
            return asyncio.run(_replay(args))
        if args.command == "record":
            return asyncio.run(_record(args))
        if args.command == "timeline":
            from collector.tools.timeline import write_timeline

            write_timeline(args.files, sys.stdout, step=args.step, server_id=args.server_id)
            return 0
        if args.command == "db":
            return int(args.func(args))
    except ConfigError as exc:
        sys.stderr.write(f"collector: config error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except FileNotFoundError as exc:
        sys.stderr.write(f"collector: {exc}\n")
        return 2
    parser.error(f"unknown command {args.command}")
