"""The installed launchers: isolated (``-IS``), and the mail programs' quick exit loses no output.

The quick exit (``posix._exit`` after a flush, :data:`vpop.launchers.QUICK_EXIT`) skips the
interpreter's finalization; what a program printed through ``sys.stdout``/``sys.stderr`` (buffered,
into a pipe) must still arrive, its exit code must be the one ``main`` returned, and a ``main``
that returns something else or raises ends as ``raise SystemExit(main())`` would have.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import VENV_BIN, program
from vpop.launchers import QUICK_EXIT, launcher_text

MODULE = '''
import sys

def main():
    print("out " * 5000)  # more than one buffer's worth, into a pipe
    print("err", file=sys.stderr)
    return {result}
'''


def write_launcher(tmp_path: Path, quick_exit: bool) -> Path:
    """A launcher of ``probe.main`` from ``tmp_path``, as ``vpop.launchers`` writes them."""
    launcher = tmp_path / "probe-launcher"
    launcher.write_text(launcher_text(str(VENV_BIN / "python"), "probe", "main", str(tmp_path), quick_exit))
    launcher.chmod(0o755)
    return launcher


def run_launcher(tmp_path: Path, result: str, quick_exit: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "probe.py").write_text(MODULE.format(result=result))
    return subprocess.run([str(write_launcher(tmp_path, quick_exit))], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("result, code, stderr", [("3", 3, "err\n"), ("0", 0, "err\n"), ("None", 0, "err\n"),
                                                  ("'a message'", 1, "err\na message\n")])
def test_quick_exit_ends_as_system_exit_would(tmp_path: Path, result: str, code: int, stderr: str) -> None:
    for quick_exit in (False, True):
        done = run_launcher(tmp_path, result, quick_exit)
        assert (done.returncode, done.stdout, done.stderr) == (code, "out " * 5000 + "\n", stderr), quick_exit


def test_quick_exit_with_stdout_closed(tmp_path: Path) -> None:
    """A flush that fails at the end (stdout's reader is gone) ends the ordinary way: 120."""
    (tmp_path / "probe.py").write_text("def main():\n    print('short')\n    return 0\n")
    codes = []
    for quick_exit in (False, True):
        launcher = write_launcher(tmp_path, quick_exit)
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run([str(launcher)], stdout=write_end, stderr=subprocess.PIPE, timeout=30)
        finally:
            os.close(write_end)
        codes.append((done.returncode, b"BrokenPipeError" in done.stderr))
    assert codes == [(120, True), (120, True)]


def test_installed_launchers() -> None:
    """Every launcher starts ``-IS``; the mail programs end with the quick exit, the others do not."""
    for name in ("vchkpw", "vdelivermail", "qmail-getpw", "vadduser", "vlookupd", "vpopmaild"):
        text = Path(program(name)).read_text()
        assert text.split("\n")[0].endswith(" -IS")
        assert ("posix._exit(code)" in text) == (name in QUICK_EXIT), name
