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

Run it after every ``pip install`` (``scripts/common.sh`` does).
"""

import os
import sys
from importlib.metadata import distribution


def launcher_text(python: str, module: str, function: str, site_packages: str) -> str:
    return (f"#!{python} -IS\nimport sys\nsys.path.append({site_packages!r})\n"
            f"from {module} import {function}\nraise SystemExit({function}())\n")


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
            handle.write(launcher_text(python, module.strip(), function.strip(), site_packages))
        os.chmod(tmp, 0o755)
        os.rename(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for name in rewrite():
        print("launcher:", name)
