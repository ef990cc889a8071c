"""Rewrite the installed console scripts as isolated launchers: ``python -I -m vpop.launchers``.

pip writes console scripts with a plain ``#!python`` shebang and an ``import re`` wrapper.
Our programs run as root (vchkpw) or for every delivery, so they must not be steered by
``PYTHONPATH``/``PYTHONHOME``/``PYTHONSTARTUP`` or the user site (the DESIGN's rule for root
programs), and every millisecond of start-up counts.  This rewrites each console script of
the ``vpop`` distribution to::

    #!/path/to/venv/bin/python -IS
    import sys
    sys.path.append('/path/to/venv/lib/python3.X/site-packages')
    from vchkpw.main import main
    raise SystemExit(main())

``-S`` skips ``site``: its ``.pth`` processing (setuptools' ``_distutils_hack``) and Debian's
``sitecustomize`` cost about 1.4 ms of a 14 ms start, and nothing here needs them; the one
directory ``site`` would have added is added by the launcher itself.

The mail-path programs (:data:`QUICK_EXIT`: one run per login, per delivery, per qmail-lspawn
lookup) end with ``posix._exit`` once ``sys.stdout`` and ``sys.stderr`` are flushed: the
interpreter's finalization (freeing every module and object of a process that is about to go
away) costs about 1.8 ms, as much as a tenth of a run.  Their ``main`` returns an int; nothing
of theirs is left to finalization: they write with ``os.write``/``posix.write``, their syslog is
a datagram sent at once, they register no ``atexit``, and a database connection left open is not
worth more at exit than its socket closing (PyMySQL's own ``__del__`` sends no QUIT either; every
write is committed before the answer).  A ``SystemExit`` or an uncaught exception still ends the
ordinary way, and so does a flush that fails.

Run it after every ``pip install`` (``scripts/common.sh`` does).
"""

import os
import sys
from importlib.metadata import distribution

#: the console scripts whose launchers skip the interpreter's finalization
QUICK_EXIT = frozenset(("vchkpw", "vdelivermail", "qmail-getpw"))

_QUICK_EXIT_TAIL = """code = {function}()
if type(code) is not int:
    raise SystemExit(code)
try:
    sys.stdout.flush()
    sys.stderr.flush()
except BaseException:
    raise SystemExit(code) from None
import posix
posix._exit(code)
"""


def launcher_text(python: str, module: str, function: str, site_packages: str,
                  quick_exit: bool = False) -> str:
    head = (f"#!{python} -IS\nimport sys\nsys.path.append({site_packages!r})\n"
            f"from {module} import {function}\n")
    if quick_exit:
        return head + _QUICK_EXIT_TAIL.format(function=function)
    return head + f"raise SystemExit({function}())\n"


def rewrite(bin_dir: str | None = None, python: str | None = None) -> list[str]:
    """Rewrite the launchers in ``bin_dir`` (default: next to this interpreter)."""
    import sysconfig

    python = python or sys.executable
    bin_dir = bin_dir or os.path.dirname(python)
    site_packages = sysconfig.get_paths()["purelib"]
    written = []
    for entry in distribution("vpop").entry_points:
        if entry.group != "console_scripts":
            continue
        module, _, function = entry.value.partition(":")
        path = os.path.join(bin_dir, entry.name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(launcher_text(python, module.strip(), function.strip(), site_packages,
                                         quick_exit=entry.name in QUICK_EXIT))
        os.chmod(tmp, 0o755)
        os.rename(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for name in rewrite():
        print("launcher:", name)
