"""vpopmaild: vpopmail's admin protocol, one connection per process, as tcpserver runs it.

    tcpserver -vHRD 127.0.0.1 89 /path/to/.venv/bin/vpopmaild      (as root)

Protocol only: the session (greeting, login, the limits, the command loop) is
:mod:`vpopmaild.session`, the commands :mod:`vpopmaild.commands`; every store and file change
goes through :mod:`vpop.admin`, every login through :mod:`vpop.auth`.  This module maps what
ends a session to an exit status in one place (tcpserver only logs it).
"""

import sys


def main(argv: list[str] | None = None) -> int:
    from vpop import log as vlog
    from vpop.environment import original_environ
    from vpop.errors import ConfigError, raised_at

    from vpopmaild import wire

    connection = None
    log = None
    try:
        from vpop.config import load_settings

        environ = original_environ()
        connection = wire.Connection(0, 1, 60)
        try:
            settings = load_settings(environ)
        except ConfigError as exc:
            vlog.stderr_line(f"vpopmaild: {exc.message}")
            connection.send([wire.Refusal(wire.CANT_OPEN_AUTH, 101).line()])
            return 111
        connection.timeout = settings.vpopmaild_timeout
        log = vlog.Logger(settings.log_name, settings.logging, settings.syslog_socket)
        from vpopmaild.session import Session

        return Session(settings, log, connection, environ).run()
    except (wire.Closed, wire.Timeout):
        return 1
    except Exception as exc:
        # Name the place, never the message: it could quote a password of the line in hand.
        where = raised_at(exc, "vpopmaild")
        vlog.stderr_line(f"vpopmaild: internal error {exc.__class__.__name__} at {where}")
        if log is not None:
            log.send(f"vpopmaild: internal error {exc.__class__.__name__} at {where}")
        return 111


if __name__ == "__main__":
    sys.exit(main())
