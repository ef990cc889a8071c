"""The main job on the embedded default (the CDB store), in a sandbox folder.

Creates a vpopmail tree, adds a domain and its postmaster with the installed ``vadddomain`` as an
operator would, logs in through the installed ``vchkpw`` with a real fd 3 (as qmail-popup does),
shows what the exec'd program received, then a refused login and a delivery through
``vdelivermail``, with the syslog lines vchkpw sent.  Run by ``scripts/demo.sh``.
"""

import os
import socket
import subprocess
import sys
import tempfile

VENV_BIN = os.path.dirname(sys.executable)
DOMAIN, USER, PASSWORD = "example.com", "postmaster", "demo-secret"
UID = GID = 89
SHOW = ('echo "  uid=$(id -u) gid=$(id -g) cwd=$(pwd)"; '
        'env | grep -E "^(USER|HOME|SHELL|VPOPUSER)=" | sed "s/^/  /"')


def run_with_fd3(argv: list[str], data: bytes, env: dict) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``data`` readable on a real fd 3 (a pipe), as qmail-popup does."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    saved = os.dup(3) if _is_open(3) else None
    os.dup2(read_end, 3, inheritable=True)
    try:
        return subprocess.run(argv, env=env, pass_fds=(3,), capture_output=True, text=True, timeout=30)
    finally:
        os.close(read_end)
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def demo_delivery(domain_dir: str, user_dir: str, env: dict) -> bool:
    """A message for the user through vdelivermail, run as uid 89 as qmail-local runs it."""
    from vpop.qmailenv import virtual_delivery_environ

    message = (b"From: alice@example.org\nTo: postmaster@example.com\nSubject: demo\n\n"
               b"Hello from the vpop demo.\n")
    spool = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(domain_dir))), "message")
    with open(spool, "wb") as handle:
        handle.write(message)
    os.chmod(spool, 0o644)
    qenv = virtual_delivery_environ(f"{USER}@{DOMAIN}", domain_dir, "alice@example.org",
                                    base={"PATH": env["PATH"], "VPOP_CONFIG": env["VPOP_CONFIG"]})
    vdelivermail = f"{VENV_BIN}/vdelivermail"
    print(f"\n$ {vdelivermail} '' bounce-no-mailbox < message   # as uid {UID}, qmail-local's environment")
    with open(spool, "rb") as stdin:
        done = subprocess.run([vdelivermail, "", "bounce-no-mailbox"], stdin=stdin, env=qenv, cwd=domain_dir,
                              capture_output=True, text=True, timeout=30, user=UID, group=GID,
                              extra_groups=[GID])
    print(done.stdout + done.stderr, end="")
    print(f"  exit {done.returncode}  (0: delivered)")
    new = os.path.join(user_dir, "Maildir", "new")
    names = os.listdir(new)
    for name in names:
        print(f"  {new}/{name}:")
        with open(os.path.join(new, name), encoding="utf-8", errors="replace") as handle:
            print("".join("    | " + line for line in handle))
    return done.returncode == 0 and len(names) == 1


def main() -> int:
    sandbox = tempfile.mkdtemp(prefix="vpop-demo-", dir="/tmp")
    os.chmod(sandbox, 0o755)
    home, qmail = f"{sandbox}/vpopmail", f"{sandbox}/qmail"
    for path in (home + "/etc", home + "/bin", qmail + "/users", qmail + "/control"):
        os.makedirs(path, mode=0o755)
    for name in ("vchkpw", "vdelivermail"):  # as README's "Installing for real" links them
        os.symlink(f"{VENV_BIN}/{name}", f"{home}/bin/{name}")
    log_socket = f"{sandbox}/syslog.sock"
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(log_socket)
    syslog.settimeout(0.2)
    config = f"{sandbox}/vpop.conf"
    with open(config, "w") as handle:
        handle.write(f"vpopmail_home = {home}\nqmail_home = {qmail}\nstore = cdb\nlogging = y\n"
                     f"syslog_socket = {log_socket}\nqmail_send_signal = none\n")
    os.environ["VPOP_CONFIG"] = config
    print(f"sandbox: {sandbox}")
    print(f"settings: {config}")

    # The domain, its postmaster and one more user, as an operator adds them.
    admin_env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config}
    added = True
    for argv in ([f"{VENV_BIN}/vadddomain", DOMAIN, PASSWORD],
                 [f"{VENV_BIN}/vadduser", "-q", "10M", f"alice@{DOMAIN}", "alice-secret"],
                 [f"{VENV_BIN}/vdominfo", DOMAIN], [f"{VENV_BIN}/vuserinfo", f"alice@{DOMAIN}"]):
        shown = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))
        print(f"\n$ {shown}")
        done = subprocess.run(argv, env=admin_env, capture_output=True, text=True, timeout=60)
        print("".join("  " + line + "\n" for line in (done.stdout + done.stderr).splitlines()), end="")
        print(f"  exit {done.returncode}")
        added = added and done.returncode == 0
    if not added:
        print("\ndemo FAILED")
        return 1

    from vpop import assign
    from vpop.config import load_settings
    from vpop.stores import open_store

    settings = load_settings()
    domain = assign.lookup(settings.qmail_home, DOMAIN)
    store = open_store(settings)
    record = store.get_user(USER, domain)
    store.close()
    domain_dir = domain.dir
    print(f"\ndomain {DOMAIN}: {domain_dir} (users/assign -> users/cdb)")
    print(f"  .qmail-default: {open(domain_dir + '/.qmail-default').read().strip()}")
    print(f"user {USER}@{DOMAIN}: {record.dir}  hash {record.passwd}")

    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110",
           "TCPREMOTEIP": "192.0.2.10", "TCPLOCALIP": "192.0.2.1", "PROTO": "TCP"}
    vchkpw = f"{VENV_BIN}/vchkpw"
    banner = b"<4242.1700000000@mail.example.com>"
    print(f"\n$ {vchkpw} /bin/sh -c '...'   # fd 3 = {USER}@{DOMAIN}\\0{PASSWORD}\\0{banner.decode()}\\0")
    good = run_with_fd3([vchkpw, "/bin/sh", "-c", SHOW],
                        f"{USER}@{DOMAIN}\0{PASSWORD}\0".encode() + banner + b"\0", env)
    print(good.stdout + good.stderr, end="")
    print(f"  exit {good.returncode}  (0: authenticated, privileges dropped, program exec'd)")

    print(f"\n$ {vchkpw} /bin/sh -c '...'   # fd 3 = {USER}@{DOMAIN}\\0wrong-password\\0...")
    bad = run_with_fd3([vchkpw, "/bin/sh", "-c", SHOW],
                       f"{USER}@{DOMAIN}\0wrong-password\0".encode() + banner + b"\0", env)
    print(bad.stdout + bad.stderr, end="")
    print(f"  exit {bad.returncode}  (1: refused, nothing exec'd)")

    delivered = demo_delivery(domain_dir, record.dir, env)

    print("\nsyslog lines sent by vchkpw (facility mail):")
    while True:
        try:
            print("  " + syslog.recv(4096).decode(errors="replace"))
        except TimeoutError:
            break
    ok = good.returncode == 0 and f"USER={USER}" in good.stdout and bad.returncode == 1 and delivered
    print("\ndemo " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
