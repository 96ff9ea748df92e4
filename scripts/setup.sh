#!/usr/bin/env bash
# Shared set-up for scripts/demo and scripts/test. Every step checks before it
# acts, so a second run takes seconds.
#
#   scripts/setup.sh        do the set-up, then print `export NAME=value` lines
#                           (eval "$(scripts/setup.sh)" works)
#   . scripts/setup.sh      do the set-up, then set the variables below and
#                           define buildr_run in the calling shell
#
# As root (a fresh Debian 12 machine, CI): installs the Debian packages, makes
# the unprivileged user $BUILDR_USER (default buildr) with subuid/subgid ranges
# and /run/user/<uid>, writes its rootless Podman config (runc, overlay),
# copies the sources to ~buildr/buildr-podman, makes the venv ~buildr/venv and
# builds the images.
# As an ordinary user (a workstation): changes nothing outside the repo and
# never uses sudo; checks Podman, makes <repo>/.venv and builds the images.
#
# With BUILDR_SETUP_TESTS=1 (scripts/test sets it) it also makes a venv of its own for the
# remote cache tests' REAPI server (BuildGrid): ~buildr/reapi-server-venv, or
# <repo>/.venv-reapi-server as an ordinary user.
#
# Afterwards: BUILDR_MODE (root|user), BUILDR_USER, REPO (this checkout),
# SRC (the sources the job runs from), VENV, REAPI_SERVER_VENV, BUILDR_XDG_RUNTIME_DIR; buildr_run CMD [ARG...] runs CMD in $SRC as the
# unprivileged user with $VENV/bin first on PATH and returns its exit code.

_bs_setup="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/setup.sh"
REPO="$(cd "$(dirname "$_bs_setup")/.." && pwd -P)"
BUILDR_USER="${BUILDR_USER:-buildr}"
BUILDR_GCC_IMAGE="localhost/buildr-gcc:bookworm"
BUILDR_BUSYBOX_IMAGE="localhost/buildr-busybox:latest"

_bs_say() { printf 'setup: %s\n' "$*" >&2; }
_bs_warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
_bs_die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# Names of the caller's environment variables worth passing to the user:
# pip/TLS/proxy settings (pip needs them to reach the index), BUILDR_*, PYTEST_ADDOPTS.
_bs_forward_env() {
    local name
    for name in $(compgen -e); do
        case "$name" in
            PIP_* | SSL_CERT_FILE | SSL_CERT_DIR | REQUESTS_CA_BUNDLE | CURL_CA_BUNDLE | \
                http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY | \
                PYTEST_ADDOPTS | TERM | BUILDR_*)
                case "$name" in
                    BUILDR_MODE | BUILDR_USER | BUILDR_XDG_RUNTIME_DIR | BUILDR_GCC_IMAGE | BUILDR_BUSYBOX_IMAGE | BUILDR_SETUP_TESTS) ;;
                    *) printf '%s=%s\0' "$name" "${!name}" ;;
                esac
                ;;
        esac
    done
}

# Work out where everything is (cheap; needs the user to exist in root mode).
_bs_vars() {
    if [ "$(id -u)" = 0 ]; then
        BUILDR_MODE=root
        local ent
        ent="$(getent passwd "$BUILDR_USER")" || _bs_die "user $BUILDR_USER does not exist (set-up did not run?)"
        _bs_uid="$(printf '%s' "$ent" | cut -d: -f3)"
        _bs_gid="$(printf '%s' "$ent" | cut -d: -f4)"
        _bs_home="$(printf '%s' "$ent" | cut -d: -f6)"
        SRC="$_bs_home/buildr-podman"
        VENV="$_bs_home/venv"
        REAPI_SERVER_VENV="$_bs_home/reapi-server-venv"
        BUILDR_XDG_RUNTIME_DIR="/run/user/$_bs_uid"
    else
        BUILDR_MODE=user
        BUILDR_USER="$(id -un)"
        _bs_uid="$(id -u)"
        _bs_gid="$(id -g)"
        _bs_home="$HOME"
        SRC="$REPO"
        VENV="$REPO/.venv"
        REAPI_SERVER_VENV="$REPO/.venv-reapi-server"
        BUILDR_XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-}"
    fi
}

# Run a command as the unprivileged user, in directory $1, with a clean
# environment (root mode) or the caller's (user mode).
_bs_in_dir_as_user() {
    local dir="$1"
    shift
    if [ "$BUILDR_MODE" = root ]; then
        local -a fwd=()
        local kv
        while IFS= read -r -d '' kv; do fwd+=("$kv"); done < <(_bs_forward_env)
        # shellcheck disable=SC2016 # $0/$@ belong to the inner bash
        (cd / && runuser -u "$BUILDR_USER" -- env -i \
            HOME="$_bs_home" USER="$BUILDR_USER" LOGNAME="$BUILDR_USER" SHELL=/bin/bash \
            PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
            XDG_RUNTIME_DIR="$BUILDR_XDG_RUNTIME_DIR" LANG=C.UTF-8 CI="${CI:-}" \
            VIRTUAL_ENV="$VENV" \
            "${fwd[@]}" \
            bash -c 'cd "$0" && exec "$@"' "$dir" "$@")
    else
        (cd "$dir" && PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV" "$@")
    fi
}
_bs_as_user() { _bs_in_dir_as_user / "$@"; }

# PIDs of the user's `podman system service` processes.
_bs_service_pids() {
    command -v pgrep >/dev/null 2>&1 || return 0
    pgrep -u "$_bs_uid" -f 'podman( .*)? system service' 2>/dev/null | sort || true
}

buildr_run() {
    local before after pid rc=0 left
    before="$(_bs_service_pids)"
    _bs_in_dir_as_user "$SRC" "$@" || rc=$?
    # Stop any `podman system service` the job started and left behind.
    after="$(_bs_service_pids)"
    for pid in $after; do
        if ! printf '%s\n' "$before" | grep -qx "$pid"; then
            printf 'setup: stopping leftover podman system service (pid %s)\n' "$pid" >&2
            kill "$pid" 2>/dev/null || true
        fi
    done
    left="$(_bs_as_user podman ps --format '{{.Names}}' 2>/dev/null | tr '\n' ' ' || true)"
    [ -z "${left// /}" ] || _bs_warn "containers still running for $BUILDR_USER after the job: $left"
    return "$rc"
}

# ---------------------------------------------------------------- the steps

_BS_PACKAGES=(podman uidmap slirp4netns fuse-overlayfs runc catatonit netavark aardvark-dns
    mmdebstrap busybox-static debian-archive-keyring python3-venv python3-dev gcc patchelf
    rsync procps ca-certificates)
# Only for the tests (BUILDR_SETUP_TESTS=1): the database of the REAPI cluster that remote
# execution's tests start (tests/integration/reapi_cluster.py: a private cluster, initdb'd
# by the test user into a directory of its own; the package's own cluster is not used).
_BS_TEST_PACKAGES=(postgresql)

_bs_step_packages() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        _bs_die "no apt-get here (not Debian): install ${_BS_PACKAGES[*]} (or your distribution's equivalents) yourself, then run this as an ordinary user"
    fi
    local -a missing=() wanted=("${_BS_PACKAGES[@]}")
    local p
    if [ "${BUILDR_SETUP_TESTS:-}" = 1 ]; then wanted+=("${_BS_TEST_PACKAGES[@]}"); fi
    for p in "${wanted[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        _bs_say "installing Debian packages: ${missing[*]}"
        local log
        log="$(mktemp /tmp/buildr-setup-apt.XXXXXX)"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 </dev/null; then
            tail -n 20 "$log" >&2
            _bs_die "apt-get could not install ${missing[*]} (full log: $log)"
        fi
        rm -f "$log"
    fi
    _bs_say "podman $(podman --version | awk '{print $NF}') present, runc $(runc --version | awk 'NR==1{print $NF}'), Debian packages ok"
    # slirp4netns (rootless networking) needs /dev/net/tun; 0666 as on a workstation.
    if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
        chmod 0666 /dev/net/tun
        _bs_say "made /dev/net/tun mode 0666 (rootless slirp4netns networking)"
    fi
}

_bs_add_subid_range() { # file user uid
    local file="$1" user="$2" uid="$3" start
    [ -e "$file" ] || install -m 0644 /dev/null "$file"
    if grep -qE "^($user|$uid):" "$file"; then
        return 0
    fi
    start="$(awk -F: 'BEGIN { m = 100000 } NF >= 3 { e = $2 + $3; if (e > m) m = e } END { print m }' "$file")"
    printf '%s:%s:65536\n' "$user" "$start" >>"$file"
    _bs_say "added $file range $user:$start:65536"
}

_bs_step_user() {
    if ! id -u "$BUILDR_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$BUILDR_USER"
        _bs_say "created user $BUILDR_USER"
    fi
    _bs_vars
    if [ ! -d "$_bs_home" ]; then
        install -d -m 0750 -o "$_bs_uid" -g "$_bs_gid" "$_bs_home"
    fi
    [ "$(stat -c %u "$_bs_home")" = "$_bs_uid" ] || chown "$_bs_uid:$_bs_gid" "$_bs_home"
    _bs_add_subid_range /etc/subuid "$BUILDR_USER" "$_bs_uid"
    _bs_add_subid_range /etc/subgid "$BUILDR_USER" "$_bs_uid"
    _bs_say "user $BUILDR_USER ready (uid $_bs_uid, home $_bs_home, $(grep -E "^($BUILDR_USER|$_bs_uid):" /etc/subuid | head -n1 | cut -d: -f2-3 | tr : +) subuids)"

    # No systemd login session here: make the runtime dir ourselves.
    [ -d /run/user ] || install -d -m 0755 /run/user
    local rt="$BUILDR_XDG_RUNTIME_DIR"
    if [ ! -d "$rt" ] || [ "$(stat -c '%u %a' "$rt")" != "$_bs_uid 700" ]; then
        install -d -m 0700 -o "$_bs_uid" -g "$_bs_gid" "$rt"
        chown "$_bs_uid:$_bs_gid" "$rt"
        chmod 0700 "$rt"
        _bs_say "made XDG_RUNTIME_DIR $rt"
    fi
}

_bs_write_if_changed() { # path content -> returns 0 if written
    local path="$1" content="$2"
    if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
        return 1
    fi
    printf '%s\n' "$content" >"$path.tmp"
    chown "$_bs_uid:$_bs_gid" "$path.tmp"
    chmod 0644 "$path.tmp"
    mv -f "$path.tmp" "$path"
    return 0
}

_bs_step_podman_config() {
    local cfg="$_bs_home/.config/containers" store="$_bs_home/.local/share/containers/storage" changed=0
    install -d -m 0755 -o "$_bs_uid" -g "$_bs_gid" "$_bs_home/.config"
    install -d -m 0755 -o "$_bs_uid" -g "$_bs_gid" "$cfg"
    if [ -d "$store/vfs" ] || [ -d "$store/vfs-images" ]; then
        _bs_refuse_vfs "runuser -u $BUILDR_USER -- env XDG_RUNTIME_DIR=$BUILDR_XDG_RUNTIME_DIR podman system reset --force"
    fi
    if _bs_write_if_changed "$cfg/containers.conf" '# Written by buildr-podman scripts/setup.sh.
# crun refuses cgroup v1 "hybrid" layouts; runc works everywhere.
# No systemd user session for this user: cgroupfs, file events, k8s-file logs.
[containers]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'; then
        changed=1
        _bs_say "wrote $cfg/containers.conf (runtime runc)"
    fi
    if _bs_write_if_changed "$cfg/storage.conf" '# Written by buildr-podman scripts/setup.sh: native overlay, not vfs.
[storage]
driver = "overlay"'; then
        changed=1
        _bs_say "wrote $cfg/storage.conf (driver overlay)"
    fi
    if [ "$changed" = 1 ] && [ -d "$store" ]; then
        _bs_as_user podman system migrate >/dev/null 2>&1 || _bs_warn "podman system migrate failed for $BUILDR_USER"
        _bs_say "ran podman system migrate for $BUILDR_USER"
    fi
    _bs_check_podman_info
}

_bs_podman_info() {
    _bs_as_user podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}}' 2>&1
}

_bs_check_podman_info() {
    local out driver runtime works=1
    out="$(_bs_podman_info)" || works=0
    # A machine whose processes were killed (the end of a session, an OOM kill) keeps the
    # state of containers that no longer run; Podman then refuses every command until
    # `podman system migrate` starts a new pause process. That is a state to repair, not
    # a set-up the user must fix by hand.
    if [ "$works" = 0 ] && printf '%s' "$out" | grep -q 'system migrate'; then
        _bs_say "the rootless pause process of $BUILDR_USER is gone: running podman system migrate"
        _bs_as_user podman system migrate >/dev/null 2>&1 || true
        works=1
        out="$(_bs_podman_info)" || works=0
    fi
    if [ "$works" = 0 ]; then
        printf '%s\n' "$out" | tail -n 5 >&2
        _bs_die "rootless podman does not work for $BUILDR_USER (see above): check /etc/subuid, /etc/subgid, XDG_RUNTIME_DIR=$BUILDR_XDG_RUNTIME_DIR and that newuidmap (package uidmap) is installed"
    fi
    out="$(printf '%s\n' "$out" | tail -n 1)"
    driver="${out%% *}"
    runtime="${out##* }"
    _bs_say "rootless podman works for $BUILDR_USER: graphDriverName $driver, ociRuntime $runtime"
    if [ "$driver" = vfs ]; then
        _bs_refuse_vfs "put [storage] driver = \"overlay\" in ~/.config/containers/storage.conf, then podman system reset --force"
    fi
}

# vfs copies the whole image at every container start (10x slower): stop before building
# images into a storage that the fix then wipes. BUILDR_ALLOW_VFS=1 goes on anyway.
_bs_refuse_vfs() { # how to reset
    if [ "${BUILDR_ALLOW_VFS:-}" = 1 ]; then
        _bs_warn "$BUILDR_USER's Podman storage uses the vfs driver (10x slower container starts); going on as BUILDR_ALLOW_VFS=1 asks"
        return 0
    fi
    _bs_die "$BUILDR_USER's Podman storage uses the vfs driver: every container start copies the whole image (10x slower). To move to overlay: $1 (this deletes ALL of $BUILDR_USER's Podman images, containers and volumes; the project's own images are rebuilt offline by the next run), then run this again. To go on with vfs: BUILDR_ALLOW_VFS=1"
}

_bs_step_sources() {
    if [ "$REPO" = "$SRC" ]; then
        _bs_say "running from $SRC already"
        return 0
    fi
    local -a excl=(--exclude=/.git --exclude=.venv --exclude=.venv-reapi-server --exclude=/venv --exclude=__pycache__
        --exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.hypothesis
        --exclude='*.egg-info' --exclude=.buildr/out --exclude='*.so')
    # *.so: the C extensions (setup.py) are built in place by pip in $SRC; never copied in,
    # never deleted by --delete (a fresh clone has none), rebuilt when their sources change.
    local n
    n="$(rsync -a --delete "${excl[@]}" --chown="$_bs_uid:$_bs_gid" --chmod=u+rwX \
        --out-format='%n' "$REPO/" "$SRC/" | wc -l)" || _bs_die "rsync of $REPO to $SRC failed (see above)"
    _bs_say "sources synced to $SRC ($n changed)"
}

_bs_pick_python() {
    local py
    if [ "$BUILDR_MODE" = root ]; then
        py=/usr/bin/python3 # the default python3 may live under /root, unreadable by the user
    else
        py="$(command -v python3 || true)"
        [ -n "$py" ] || py=/usr/bin/python3
    fi
    [ -x "$py" ] || _bs_die "python3 is not installed: install Python 3.11 or newer with venv (e.g. apt-get install python3-venv)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        _bs_die "$py is older than 3.11: install Python 3.11 or newer"
    printf '%s' "$py"
}

_bs_step_venv() {
    local py
    py="$(_bs_pick_python)"
    if ! _bs_as_user "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        if [ -e "$VENV" ]; then
            [ -f "$VENV/pyvenv.cfg" ] || _bs_die "$VENV exists but is not a venv: move it away"
            _bs_say "venv $VENV is broken: recreating it"
            rm -rf "$VENV"
        fi
        _bs_as_user "$py" -m venv "$VENV" ||
            _bs_die "could not make a venv with $py: install python3-venv (apt-get install python3-venv)"
        _bs_say "made venv $VENV with $py"
    fi

    local -a reqs=(-e "${SRC}[test]" rich)
    local d
    for d in "$SRC"/plugins/*/; do
        if [ -f "$d/pyproject.toml" ]; then reqs+=(-e "${d%/}"); fi
    done
    local stamp="$VENV/.buildr-setup-stamp" want
    want="$(
        cd "$SRC" &&
            printf '%s\n' "${reqs[*]}" &&
            "$VENV/bin/python" -VV &&
            sha256sum setup.cfg setup.py pyproject.toml buildr_podman/*/_*.c plugins/*/pyproject.toml plugins/*/setup.cfg plugins/*/setup.py 2>/dev/null
    )" || true
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        _bs_say "venv $VENV up to date"
        _bs_keep_lark
        return 0
    fi
    _bs_say "pip installing buildr-podman[test] rich and $(((${#reqs[@]} - 3) / 2)) plugin(s) into $VENV (first time: a few minutes)"
    _bs_as_user "$VENV/bin/python" -m pip install -q "${reqs[@]}" ||
        _bs_die "pip install into $VENV failed (see above): fix the packaging metadata or network and re-run"
    _bs_keep_lark
    printf '%s\n' "$want" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
    if [ "$BUILDR_MODE" = root ]; then chown "$_bs_uid:$_bs_gid" "$stamp"; fi
    _bs_say "venv $VENV ready: $(_bs_as_user "$VENV/bin/python" -c 'import buildr_podman; print("buildr_podman", buildr_podman.__version__)' 2>&1 | tail -n1)"
}

# BuildGrid, the REAPI server of the remote cache's tests, in a venv of its own: in
# buildr-podman's venv its lark-parser would overwrite python-hcl2's lark (every HCL file then
# fails to parse) and its many dependencies (pydantic, boto3, ...) would be the product's too.
_bs_step_reapi_server() {
    local py requirements="$SRC/tests/reapi-server-requirements.txt"
    py="$(_bs_pick_python)"
    if ! _bs_as_user "$REAPI_SERVER_VENV/bin/python" -c '' >/dev/null 2>&1; then
        rm -rf "$REAPI_SERVER_VENV"
        _bs_as_user "$py" -m venv "$REAPI_SERVER_VENV" ||
            _bs_die "could not make a venv with $py: install python3-venv (apt-get install python3-venv)"
    fi
    local stamp="$REAPI_SERVER_VENV/.buildr-setup-stamp" want
    want="$("$REAPI_SERVER_VENV/bin/python" -VV && sha256sum "$requirements")" || true
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        _bs_say "REAPI server venv $REAPI_SERVER_VENV up to date"
        return 0
    fi
    _bs_say "pip installing the REAPI server for the tests (BuildGrid) into $REAPI_SERVER_VENV (first time: a few minutes)"
    _bs_as_user "$REAPI_SERVER_VENV/bin/python" -m pip install -q -r "$requirements" ||
        _bs_die "pip install -r $requirements into $REAPI_SERVER_VENV failed (see above): fix the network and re-run"
    printf '%s\n' "$want" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
    if [ "$BUILDR_MODE" = root ]; then chown "$_bs_uid:$_bs_gid" "$stamp"; fi
}

# A venv made while BuildGrid was in the [test] extra may still hold lark-parser 0.12's files in
# python-hcl2's lark/ directory (whichever pip installed last won), and then every HCL file fails
# to parse ("Error trying to process rule ..."): lark 1.x's own files go back.
_bs_keep_lark() {
    local check='import importlib.metadata as m, lark, sys; sys.exit(lark.__version__ != m.version("lark"))'
    _bs_as_user "$VENV/bin/python" -c "$check" 2>/dev/null && return 0
    local version
    version="$(_bs_as_user "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("lark"))')" ||
        _bs_die "lark is missing from $VENV: re-run after rm -rf $VENV"
    _bs_say "lark-parser overwrote lark $version in $VENV: putting lark's files back"
    _bs_as_user "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "lark==$version" ||
        _bs_die "could not reinstall lark $version into $VENV (see above)"
}

_bs_step_images() {
    BUILDR_USER="$BUILDR_USER" "$REPO/containers/build-images.sh" ||
        _bs_die "building the images failed (see above); containers/build-images.sh retries alone"
    local out
    if ! out="$(_bs_as_user podman run --rm --network none "$BUILDR_BUSYBOX_IMAGE" true 2>&1)"; then
        printf '%s\n' "$out" | tail -n 5 >&2
        case "$out" in
            *hybrid*|*cgroup*)
                _bs_die "podman run fails for $BUILDR_USER: the OCI runtime cannot handle this cgroup layout; install runc and put [engine] runtime = \"runc\" in ~/.config/containers/containers.conf" ;;
            *)
                _bs_die "podman run --rm --network none $BUILDR_BUSYBOX_IMAGE true fails for $BUILDR_USER (see above)" ;;
        esac
    fi
    _bs_say "rootless podman run ok for $BUILDR_USER"
}

_bs_steps_root() {
    _bs_step_packages
    _bs_step_user
    _bs_step_podman_config
    _bs_step_sources
    _bs_step_venv
    if [ "${BUILDR_SETUP_TESTS:-}" = 1 ]; then _bs_step_reapi_server; fi
    _bs_step_images
}

_bs_steps_user() {
    _bs_vars
    command -v podman >/dev/null 2>&1 ||
        _bs_die "podman is not installed: install it with your package manager (e.g. apt-get install podman)"
    _bs_say "podman $(podman --version | awk '{print $NF}') present (not root: skipping packages, user, sources copy)"
    [ -n "$BUILDR_XDG_RUNTIME_DIR" ] || _bs_warn "XDG_RUNTIME_DIR is not set: rootless podman may complain; log in through a normal session or export it"
    _bs_check_podman_info
    _bs_step_venv
    if [ "${BUILDR_SETUP_TESTS:-}" = 1 ]; then _bs_step_reapi_server; fi
    _bs_step_images
}

_bs_main_steps() {
    set -euo pipefail
    local t0=$SECONDS
    if [ "$(id -u)" = 0 ]; then _bs_steps_root; else _bs_steps_user; fi
    _bs_say "done in $((SECONDS - t0)) s"
}

# Run the steps in a child under a lock (two runs at once would race), the
# lock fd closed for the commands so a podman pause process cannot keep it.
_bs_run_steps_locked() {
    local lock
    if [ "$(id -u)" = 0 ]; then
        lock=/run/lock/buildr-podman-setup.lock
        [ -d /run/lock ] || lock=/tmp/buildr-podman-setup.lock
    else
        lock="${XDG_RUNTIME_DIR:-/tmp}/buildr-podman-setup.$(id -u).lock"
    fi
    if command -v flock >/dev/null 2>&1; then
        flock -o "$lock" bash "$_bs_setup" --steps
    else
        bash "$_bs_setup" --steps
    fi
}

if [ "${1:-}" = --steps ]; then
    _bs_main_steps
    exit 0
fi

_bs_run_steps_locked || exit $?
_bs_vars
export BUILDR_MODE BUILDR_USER REPO SRC VENV REAPI_SERVER_VENV BUILDR_XDG_RUNTIME_DIR BUILDR_GCC_IMAGE BUILDR_BUSYBOX_IMAGE

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    for _bs_n in BUILDR_MODE BUILDR_USER REPO SRC VENV REAPI_SERVER_VENV BUILDR_XDG_RUNTIME_DIR BUILDR_GCC_IMAGE BUILDR_BUSYBOX_IMAGE; do
        printf 'export %s=%q\n' "$_bs_n" "${!_bs_n}"
    done
fi
