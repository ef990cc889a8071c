# shellcheck shell=bash
# Shared setup for scripts/test.sh and scripts/demo.sh.  Source this file; do not run it.
#
#   source scripts/common.sh
#   vpop_install_env        # Debian packages, vpopmail user, .venv, pip install, launchers
#
# Everything here is idempotent and meant for a Debian 12 machine as root where only the Debian
# archive and PyPI are reachable.  Functions return non-zero on failure (callers use set -e).

VPOP_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPOP_VENV="$VPOP_REPO_ROOT/.venv"
VPOP_UID=89     # vpopmail's recommended ids (vpopmail/vchkpw)
VPOP_GID=89

# Debian packages the tests and the demo need.
VPOP_APT_PACKAGES=(
    mariadb-server mariadb-client
    dovecot-core dovecot-imapd dovecot-pop3d
    dovecot-auth-lua lua-socket # the Lua passdb/userdb asking vlookupd (conf/vlookupd.lua)
    ucspi-tcp                   # tcpserver, tcprules: vchkpw's relay rules, vpopmaild's tests
    php-cli php-net-socket      # vpopmaild's tests run Roundcube's vpopmaild password driver ...
    roundcube-plugins roundcube-sqlite3   # ... as Debian ships it (sqlite3: no MySQL for roundcube-core)
    python3-venv
    tzdata                      # the tests set far-off zones (Pacific/Kiritimati, America/St_Johns)
    strace                      # tests/test_admin_kill.py kills the admin commands at each system call
)

# The sbin directories are not on every PATH (CI runners, su without -), but mariadbd, dovecot and
# useradd live there.
case ":$PATH:" in
    *:/usr/sbin:*) ;;
    *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac
export PATH

vpop_log() {
    printf '==> %s\n' "$*" >&2
}

# Succeeds when every tool the tests use is present.
vpop_have_system_tools() {
    local tool
    for tool in mariadbd mariadb-install-db dovecot tcprules strace; do
        command -v "$tool" >/dev/null 2>&1 || return 1
    done
    [ -x /usr/lib/dovecot/checkpassword-reply ] || return 1
    command -v php >/dev/null 2>&1 || return 1
    [ -e /usr/share/roundcube/plugins/password/drivers/vpopmaild.php ] || return 1
    [ -e /usr/share/php/Net/Socket.php ] || return 1
    [ -e /usr/lib/dovecot/modules/auth/libauthdb_lua.so ] || return 1
    compgen -G "/usr/lib/*/lua/5.4/socket/unix.so" >/dev/null || return 1
    [ -e /usr/share/zoneinfo/Pacific/Kiritimati ] || return 1
    /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || return 1
}

# Installs the Debian packages.  Runs in a subshell so that its EXIT trap (which removes the
# temporary policy-rc.d) neither replaces nor is replaced by the caller's traps.
vpop_apt_install() (
    set -euo pipefail
    local policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        # 101 = "action forbidden": package postinst scripts must not start mariadb/dovecot services.
        trap 'rm -f "$policy"' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # roundcube-core must not try to set up a database of its own (dbconfig-common).
    echo "roundcube-core roundcube/dbconfig-install boolean false" | debconf-set-selections
    # Wait for a concurrent dpkg/apt instead of failing on its lock.
    local lock=(-o DPkg::Lock::Timeout=300)
    vpop_log "apt-get update"
    apt-get "${lock[@]}" update -q
    vpop_log "apt-get install ${VPOP_APT_PACKAGES[*]}"
    apt-get "${lock[@]}" install -y -q --no-install-recommends "${VPOP_APT_PACKAGES[@]}"
)

# Creates group vchkpw (gid 89) and user vpopmail (uid 89) unless they exist; insists on the ids.
vpop_ensure_users() {
    if ! getent group vchkpw >/dev/null; then
        vpop_log "groupadd -g $VPOP_GID vchkpw"
        groupadd -g "$VPOP_GID" vchkpw
    fi
    if ! getent passwd vpopmail >/dev/null; then
        vpop_log "useradd -u $VPOP_UID vpopmail"
        useradd -u "$VPOP_UID" -g "$VPOP_GID" -d /home/vpopmail -s /usr/sbin/nologin -M vpopmail
    fi
    local uid gid
    uid="$(id -u vpopmail)"
    gid="$(getent group vchkpw | cut -d: -f3)"
    if [ "$uid" != "$VPOP_UID" ] || [ "$gid" != "$VPOP_GID" ]; then
        echo "error: vpopmail/vchkpw exist with uid $uid / gid $gid; the tests need $VPOP_UID/$VPOP_GID" >&2
        return 1
    fi
}

# Creates .venv from Debian's /usr/bin/python3.  A venv made from another interpreter (for example a
# pyenv build under /root, mode 0700) cannot be run by uid 89, so such a venv is replaced.
vpop_ensure_venv() {
    local home=""
    if [ -f "$VPOP_VENV/pyvenv.cfg" ]; then
        home="$(sed -n 's/^home *= *//p' "$VPOP_VENV/pyvenv.cfg")"
    fi
    if [ -x "$VPOP_VENV/bin/python" ] && [ "$home" = /usr/bin ]; then
        return 0
    fi
    if [ -e "$VPOP_VENV" ]; then
        vpop_log "replacing $VPOP_VENV (not made by /usr/bin/python3, home='$home')"
        rm -rf "$VPOP_VENV"
    fi
    vpop_log "creating $VPOP_VENV"
    /usr/bin/python3 -m venv "$VPOP_VENV"
}

# Installs the project (non-editable) with its test extras, then rewrites the console scripts with an
# isolated-mode shebang if the project provides vpop.launchers.
vpop_install_project() {
    vpop_log "pip install .[test]"
    (cd "$VPOP_REPO_ROOT" &&
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$VPOP_VENV/bin/pip" install -q '.[test]')
    if [ -f "$VPOP_REPO_ROOT/lib/vpop/launchers.py" ]; then
        vpop_log "python -I -m vpop.launchers"
        (cd "$VPOP_REPO_ROOT" && "$VPOP_VENV/bin/python" -I -m vpop.launchers)
    fi
}

# Everything the tests and the demo need, in order.
vpop_install_env() {
    if [ "$(id -u)" != 0 ]; then
        echo "error: run as root (the tests start mariadbd/dovecot and switch to uid $VPOP_UID)" >&2
        return 1
    fi
    # Files pip writes into .venv must be readable by uid 89 whatever the caller's umask was.
    umask 022
    if ! vpop_have_system_tools; then
        vpop_apt_install
        if ! vpop_have_system_tools; then
            echo "error: required tools still missing after apt-get install" >&2
            return 1
        fi
    fi
    vpop_ensure_users
    vpop_ensure_venv
    vpop_install_project
}
