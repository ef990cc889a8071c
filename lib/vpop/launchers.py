"""Rewrite the installed console scripts as isolated launchers: ``python -I -m vpop.launchers``.

pip writes console scripts with a plain ``#!python`` shebang and an ``import re`` wrapper.
Our programs run as root (vchkpw) or for every delivery, so they must not be steered by
``PYTHONPATH``/``PYTHONHOME``/``PYTHONSTARTUP`` or the user site (the DESIGN's rule for root
programs), and every millisecond of start-up counts.  This rewrites each console script of
the ``vpop`` distribution to::

    #!/path/to/venv/bin/python -I
    from vchkpw.main import main
    raise SystemExit(main())

Run it after every ``pip install`` (``scripts/common.sh`` does).
"""

import os
import sys
from importlib.metadata import distribution


def launcher_text(python: str, module: str, function: str) -> str:
    return f"#!{python} -I\nfrom {module} import {function}\nraise SystemExit({function}())\n"


def rewrite(bin_dir: str | None = None, python: str | None = None) -> list[str]:
    """Rewrite the launchers in ``bin_dir`` (default: next to this interpreter)."""
    python = python or sys.executable
    bin_dir = bin_dir or os.path.dirname(python)
    written = []
    for entry in distribution("vpop").entry_points:
        if entry.group != "console_scripts":
            continue
        module, _, function = entry.value.partition(":")
        path = os.path.join(bin_dir, entry.name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(launcher_text(python, module.strip(), function.strip()))
        os.chmod(tmp, 0o755)
        os.rename(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for name in rewrite():
        print("launcher:", name)
