"""clearopensmtp, as vpopmail's: run from cron to close POP-before-SMTP relay windows.

Removes the relay entries older than ``relay_clear_minutes`` (``~vpopmail/etc/open-smtp`` on
the CDB store, the ``relay`` table on MySQL) and rebuilds ``tcp.smtp.cdb``.  Exit 0, or 111
with a message when the store or a file cannot be used.
"""

import sys

from vpop import clock
from vpop.errors import VpopError


def main(argv: list[str] | None = None) -> int:
    from vpop.config import load_settings
    from vpop.errors import ConfigError
    from vpop.stores import open_store

    try:
        settings = load_settings()
        if settings.store not in ("cdb", "mysql"):
            raise ConfigError(settings.path, None, "clearopensmtp needs store = cdb or mysql")
        store = open_store(settings)
        try:
            removed = store.clear_relay(int(clock.now()))
        finally:
            store.close()
    except VpopError as exc:
        print(f"clearopensmtp: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (OSError, ValueError) as exc:
        print(f"clearopensmtp: {exc}", file=sys.stderr)
        return 111
    print(f"clearopensmtp: {removed} relay entr{'y' if removed == 1 else 'ies'} removed")
    return 0
