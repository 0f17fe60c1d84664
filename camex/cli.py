"""`camex`: command-line entry point of the daemon."""

from __future__ import annotations

import os
import sys

from .base import log


def _config_loader(opts):
    """A callable that (re)reads the server's configuration file.

    The default path may be absent on a server that serves manual clients
    only; a path given with --config must exist.
    """
    from .daemon.config import load_config

    def load():
        if not opts.config_given and not os.path.exists(opts.config):
            return None
        config = load_config(opts.config)
        for warning in config.warnings:
            log.LOG.warning("%s", warning)
        return config

    return load


def harden(opts) -> None:
    """No core dumps, no ptrace, before the daemon holds keys."""
    from .daemon.loop import harden_process

    if opts.psk is not None:
        # The AEAD the daemon will load anyway, loaded first: hardening then
        # calls prctl through cryptography's C backend instead of importing
        # ctypes for it (camex.daemon.loop._prctl).
        from .base import aead  # noqa: F401
    harden_process()


def main(argv=None) -> int:
    from .daemon.parse import ConfigError
    from .daemon.options import UsageError, parse_args

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("status", "reload"):
        from .daemon.status import main as status_main
        return status_main(argv)
    if argv and argv[0] == "check-config":
        from .daemon.check import main as check_main
        return check_main(argv)
    if "--check" in argv:
        # Every problem, not only the first one a start would stop at.
        from .daemon.check import check
        return check(argv)
    try:
        opts = parse_args(argv)
    except UsageError as e:
        print(f"camex: {e}", file=sys.stderr)
        return 1
    log.setup(opts.log_level)
    from .daemon.loop import PidFile, StartupError

    harden(opts)
    if opts.mode == "client" or opts.server_tun:
        # The link set-up runs in a helper that imports pyroute2 (camex.io.
        # netlink); forked now, that import overlaps this process's own.
        from .io import netlink
        netlink.start_helper()
    try:
        # Import only the role that runs.
        if opts.mode == "server":
            from .daemon.server import ServerDaemon as Daemon
        else:
            from .daemon.client import ClientDaemon as Daemon
        from .v2 import kdf
        # scrypt's 16 MiB in a short-lived helper, never in the daemon's
        # peak (the daemon is one thread: forking is safe here).
        kdf.IN_CHILD = True
        if opts.mode == "server":
            daemon = Daemon(opts, _config_loader(opts))
        else:
            daemon = Daemon(opts)
        with PidFile(opts.pid_file):
            return daemon.run()
    except ConfigError as e:
        more = len(e.problems) - 1
        log.LOG.error("--config: %s%s", e, f" (and {more} more problem(s): `camex "
                      f"check-config -f {e.path}` lists them)" if more > 0 else "")
    except StartupError as e:
        log.LOG.error("%s", e)
    except KeyboardInterrupt:
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
