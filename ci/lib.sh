# shellcheck shell=bash
# Helpers shared by ci/demo, ci/selftest and ci/run-monitor. Source it; do not run it.
#
# Environment knobs (all optional; a relative path in them is taken from the directory the
# script was started in, as a path on its command line is):
#   POP3MON_PYTHON=/path/python   use this interpreter as is: no .venv, no pip install
#   POP3MON_NO_INSTALL=1          install nothing (no apt, no pip, no npm); use .venv if it
#                                 exists, else python3
#   POP3MON_BASE_PYTHON=python3.x interpreter that creates .venv (default: python3, then
#                                 python3.13/3.12/3.11, the first that is >= 3.11)
#   POP3MON_VENV=DIR              where the virtual environment lives (default: .venv)

POP3MON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
#: The directory the script was started from, before it changes to the checkout: a
#: relative path the user gave means a path from here (pop3mon_from_caller).
POP3MON_CALLER_DIR="$PWD"

# pop3mon_from_caller PATH : PATH made absolute against the directory the script was started
# from, so that ci/run-monitor --reports=shards/1 means ./shards/1 to the user's shell even
# though the script runs pytest in the checkout; an absolute or empty PATH as it is. A
# PATH from a home directory (~/x or ~user/x, which --opt=~/x and an env file leave
# unexpanded) is that home directory's, as the shell, pop3mon and pytest take it; ~name of
# no user is a name like any other.
pop3mon_from_caller() {
    local user home
    # shellcheck disable=SC2088  # a literal ~ is what these patterns look for
    case "$1" in
    '~' | '~/'*) printf '%s\n' "$HOME${1#'~'}" ;;
    '~'*)
        user="${1%%/*}"
        user="${user#'~'}"
        home=""
        if [[ "$user" =~ ^[A-Za-z0-9._][A-Za-z0-9._-]*$ ]]; then
            home="$(getent passwd "$user" 2>/dev/null | cut -d: -f6)"
        fi
        if [ -n "$home" ]; then
            printf '%s\n' "$home${1#"~$user"}"
        else
            printf '%s\n' "$POP3MON_CALLER_DIR/$1"
        fi
        ;;
    /* | '') printf '%s\n' "$1" ;;
    *) printf '%s\n' "$POP3MON_CALLER_DIR/$1" ;;
    esac
}

# pop3mon_program_from_caller NAME : an interpreter named with a relative path (a slash in
# it, e.g. .venv/bin/python) from the caller's directory; a bare name is looked up in PATH.
pop3mon_program_from_caller() {
    case "$1" in
    */*) pop3mon_from_caller "$1" ;;
    *) printf '%s\n' "$1" ;;
    esac
}

POP3MON_VENV="$(pop3mon_from_caller "${POP3MON_VENV:-$POP3MON_ROOT/.venv}")"
if [ -n "${POP3MON_PYTHON:-}" ]; then
    POP3MON_PYTHON="$(pop3mon_program_from_caller "$POP3MON_PYTHON")"
fi
if [ -n "${POP3MON_BASE_PYTHON:-}" ]; then
    POP3MON_BASE_PYTHON="$(pop3mon_program_from_caller "$POP3MON_BASE_PYTHON")"
fi

pop3mon_log() { printf '%s\n' "$*" >&2; }
pop3mon_die() {
    printf 'error: %s\n' "$*" >&2
    exit "${POP3MON_DIE_STATUS:-2}"
}

pop3mon_truthy() { # pop3mon_truthy VALUE -> 0 for 1/true/yes/on
    case "${1,,}" in
    1 | true | yes | on) return 0 ;;
    *) return 1 ;;
    esac
}

pop3mon_no_install() { pop3mon_truthy "${POP3MON_NO_INSTALL:-0}"; }

pop3mon_is_root() { [ "$(id -u)" = 0 ]; }

# --------------------------------------------------------------------------- Debian packages

pop3mon_deb_installed() { # pop3mon_deb_installed PKG
    command -v dpkg-query >/dev/null 2>&1 || return 1
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

_pop3mon_listening() { # _pop3mon_listening PORT -> 0 when something accepts on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_POP3MON_POLICY=/usr/sbin/policy-rc.d
_POP3MON_POLICY_SAVED=""
_POP3MON_POLICY_OURS=0

_pop3mon_policy_on() {
    # While apt runs, no package may start its service: Debian's dovecot would bind 110/995
    # and prometheus / blackbox-exporter their ports. invoke-rc.d and deb-systemd-invoke
    # both ask policy-rc.d; exit 101 means "action forbidden".
    if [ -e "$_POP3MON_POLICY" ]; then
        if grep -qx 'exit 101' "$_POP3MON_POLICY" 2>/dev/null; then
            return 0 # already forbids everything (container images often ship this one)
        fi
        _POP3MON_POLICY_SAVED="$_POP3MON_POLICY.pop3mon-saved.$$"
        mv -f "$_POP3MON_POLICY" "$_POP3MON_POLICY_SAVED"
    fi
    printf '#!/bin/sh\n# written by pop3mon ci/lib.sh while apt runs; removed afterwards\nexit 101\n' \
        >"$_POP3MON_POLICY"
    chmod 0755 "$_POP3MON_POLICY"
    _POP3MON_POLICY_OURS=1
}

_pop3mon_policy_off() {
    if [ "$_POP3MON_POLICY_OURS" = 1 ]; then
        rm -f "$_POP3MON_POLICY"
        _POP3MON_POLICY_OURS=0
    fi
    if [ -n "$_POP3MON_POLICY_SAVED" ]; then
        mv -f "$_POP3MON_POLICY_SAVED" "$_POP3MON_POLICY"
        _POP3MON_POLICY_SAVED=""
    fi
}

_pop3mon_apt() {
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l \
        apt-get -q -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "$@"
}

# pop3mon_apt_install PKG... : install the Debian packages that are missing, with no service
# started. Returns 0 when all are installed afterwards, 1 when some are missing and cannot be
# installed here (not root, or no apt-get); the caller decides whether that is fatal.
pop3mon_apt_install() {
    local missing=() pkg port rc=0 before=() aptlog
    for pkg in "$@"; do
        pop3mon_deb_installed "$pkg" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if pop3mon_no_install; then
        pop3mon_log "note: POP3MON_NO_INSTALL is set; not installing Debian packages: ${missing[*]}"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        pop3mon_log "note: no apt-get on this machine; cannot install: ${missing[*]}"
        return 1
    fi
    if ! pop3mon_is_root; then
        pop3mon_log "note: not root; cannot install Debian packages: ${missing[*]}"
        pop3mon_log "      (run as root, or: sudo apt-get install ${missing[*]})"
        return 1
    fi
    for port in 110 995; do
        _pop3mon_listening "$port" && before+=("$port")
    done
    pop3mon_log "installing Debian packages (no service is started): ${missing[*]}"
    aptlog="$(mktemp "${TMPDIR:-/tmp}/pop3mon-apt.XXXXXX")"
    (
        trap _pop3mon_policy_off EXIT
        trap 'exit 130' INT TERM HUP
        _pop3mon_policy_on
        # A fresh machine has no package lists yet; an old list may name vanished versions.
        _pop3mon_apt update &&
            _pop3mon_apt install -y --no-install-recommends "${missing[@]}"
    ) >"$aptlog" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        pop3mon_log "error: apt-get could not install: ${missing[*]} (status $rc); its last lines:"
        tail -n 20 "$aptlog" >&2
        rm -f "$aptlog"
        return 1
    fi
    rm -f "$aptlog"
    for port in 110 995; do
        if _pop3mon_listening "$port" && [[ " ${before[*]} " != *" $port "* ]]; then
            pop3mon_log "error: something started listening on port $port during the install"
            return 1
        fi
    done
    return 0
}

# pop3mon_deb_unpack PKG DIR : unpack the files of Debian package PKG into DIR without
# installing it (for a package that conflicts with one the self-tests also need: courier-pop
# and dovecot-pop3d both provide pop3-server). A no-op when DIR holds the candidate version.
# Returns 1 when it cannot (no apt, no candidate, POP3MON_NO_INSTALL, download failed).
pop3mon_deb_unpack() {
    local pkg="$1" dir="$2" version tmp rc=0
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || return 1
    version="$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p')"
    { [ -n "$version" ] && [ "$version" != "(none)" ]; } || return 1
    [ "$(cat "$dir/.pop3mon-version" 2>/dev/null)" = "$version" ] && return 0
    if pop3mon_no_install; then
        pop3mon_log "note: POP3MON_NO_INSTALL is set; not unpacking $pkg into $dir"
        return 1
    fi
    pop3mon_log "unpacking $pkg $version into $dir (not installed)"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/pop3mon-deb.XXXXXX")" || return 1
    if (cd "$tmp" && apt-get download -q "$pkg=$version") >/dev/null 2>&1; then
        rm -rf "$dir" && mkdir -p "$dir" && dpkg-deb -x "$tmp"/*.deb "$dir" &&
            printf '%s\n' "$version" >"$dir/.pop3mon-version" || rc=1
    else
        rc=1
    fi
    rm -rf "$tmp"
    return "$rc"
}

# --------------------------------------------------------------------------- Python

_pop3mon_py_ok() { # interpreter is >= 3.11
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

_pop3mon_base_python() {
    local cand
    for cand in ${POP3MON_BASE_PYTHON:-} python3 python3.13 python3.12 python3.11; do
        if command -v "$cand" >/dev/null 2>&1 && _pop3mon_py_ok "$cand"; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

_pop3mon_req_hash() { # hash of a requirements file and of the files it includes with -r
    local file="$1" dir inc
    dir="$(dirname "$file")"
    {
        cat "$file"
        sed -n 's/^[[:space:]]*-r[[:space:]]*//p' "$file" | while read -r inc; do
            cat "$dir/$inc"
        done
    } | sha256sum | cut -d' ' -f1
}

# The hashed lock of a requirements file (requirements.txt -> requirements.lock): every
# package with its version and hashes, transitive ones too. ci/lock writes them.
_pop3mon_lock_of() { printf '%s.lock\n' "${1%.txt}"; }

_pop3mon_venv_ready() { # _pop3mon_venv_ready STAMP WANT
    local vpy="$POP3MON_VENV/bin/python"
    [ -x "$vpy" ] && _pop3mon_py_ok "$vpy" && [ "$(cat "$1" 2>/dev/null)" = "$2" ]
}

# pop3mon_python REQUIREMENTS_FILE : print the interpreter to use, creating/updating the
# virtual environment when needed (a no-op when it is up to date). It installs the lock of
# REQUIREMENTS_FILE with --require-hashes, so every run gets the same versions of the
# transitive dependencies too, and only the files whose hashes the lock names; the plain
# requirements file only where the lock is missing.
# Use as: PY="$(pop3mon_python requirements.txt)" || exit 2
pop3mon_python() {
    local req="$1" base stamp want vpy lock rc=0 src
    local pipargs=()
    if [ -n "${POP3MON_PYTHON:-}" ]; then
        _pop3mon_py_ok "$POP3MON_PYTHON" ||
            pop3mon_die "POP3MON_PYTHON=$POP3MON_PYTHON is not a Python >= 3.11 interpreter"
        printf '%s\n' "$POP3MON_PYTHON"
        return 0
    fi
    vpy="$POP3MON_VENV/bin/python"
    if pop3mon_no_install; then
        if [ -x "$vpy" ] && _pop3mon_py_ok "$vpy"; then
            printf '%s\n' "$vpy"
        else
            base="$(_pop3mon_base_python)" || pop3mon_die "no Python >= 3.11 found"
            printf '%s\n' "$base"
        fi
        return 0
    fi
    src="$(_pop3mon_lock_of "$req")"
    if [ -f "$POP3MON_ROOT/$src" ]; then
        pipargs=(--require-hashes -r "$POP3MON_ROOT/$src")
    else
        pop3mon_log "note: $src is missing (ci/lock writes it); installing $req unlocked"
        src="$req"
        pipargs=(-r "$POP3MON_ROOT/$req")
    fi
    stamp="$POP3MON_VENV/.pop3mon-$(basename "$req").sha256"
    want="$(_pop3mon_req_hash "$POP3MON_ROOT/$src")"
    if ! _pop3mon_venv_ready "$stamp" "$want" && command -v flock >/dev/null 2>&1; then
        # Two runs at once (an overlapping cron job) must not install into one venv together.
        lock="${TMPDIR:-/tmp}/pop3mon-venv-$(printf '%s' "$POP3MON_VENV" | sha256sum | cut -c1-16).lock"
        exec 8>>"$lock"
        flock 8
    fi
    if _pop3mon_venv_ready "$stamp" "$want"; then
        printf '%s\n' "$vpy"
        return 0
    fi
    if ! [ -x "$vpy" ] || ! _pop3mon_py_ok "$vpy"; then
        base="$(_pop3mon_base_python)" ||
            pop3mon_die "pop3mon needs Python >= 3.11 (Debian 12: apt-get install python3 python3-venv)"
        rm -rf "$POP3MON_VENV"
        pop3mon_log "creating the virtual environment $POP3MON_VENV with $base"
        if ! "$base" -m venv "$POP3MON_VENV" >/dev/null 2>&1; then
            rm -rf "$POP3MON_VENV"
            # Debian's own python3 needs python3-venv for ensurepip.
            pop3mon_apt_install python3-venv ||
                pop3mon_die "cannot create a virtual environment with $base (install python3-venv)"
            "$base" -m venv "$POP3MON_VENV" >/dev/null ||
                pop3mon_die "cannot create a virtual environment with $base"
        fi
    fi
    pop3mon_log "installing Python packages from $src into $POP3MON_VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$vpy" -m pip install -q "${pipargs[@]}" >&2 || rc=$?
    [ "$rc" = 0 ] || pop3mon_die "pip could not install $src (status $rc)"
    printf '%s\n' "$want" >"$stamp"
    # requirements-dev.lock holds requirements.lock's versions (ci/lock resolves it with
    # -c requirements.lock): the runtime set is up to date too.
    if [ "$src" = requirements-dev.lock ] && [ -f "$POP3MON_ROOT/requirements.lock" ]; then
        _pop3mon_req_hash "$POP3MON_ROOT/requirements.lock" \
            >"$POP3MON_VENV/.pop3mon-requirements.txt.sha256"
    fi
    printf '%s\n' "$vpy"
}
