#!/usr/bin/env bash
# Build the project's two images offline (no registry), each only when it is
# missing or its recipe changed (label buildr.recipe); --force rebuilds both.
#
#   localhost/buildr-gcc:bookworm    Debian bookworm minbase + containers/buildr-gcc/packages.txt,
#                                    made by mmdebstrap from the mirror apt uses here, then podman import
#   localhost/buildr-busybox:latest  FROM scratch: Debian's static /bin/busybox and its applet
#                                    symlinks only, no libc (containers/buildr-busybox/Containerfile)
#
# As root: builds into the rootless storage of $BUILDR_USER (default buildr),
# which scripts/setup.sh must have set up; mmdebstrap runs as root.
# As an ordinary user: builds into your own storage (mmdebstrap in unshare mode).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
GCC_IMAGE=localhost/buildr-gcc:bookworm
BUSYBOX_IMAGE=localhost/buildr-busybox:latest
RECIPE_VERSION=1 # bump to force a rebuild everywhere after changing this script's logic
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf 'images: %s\n' "$*" >&2; }
die() { printf 'images: ERROR: %s\n' "$*" >&2; exit 1; }

force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) die "usage: $0 [--force]" ;;
esac

if [ "$(id -u)" = 0 ]; then
    U="${BUILDR_USER:-buildr}"
    ent="$(getent passwd "$U")" || die "user $U does not exist: run scripts/setup.sh first"
    uid="$(printf '%s' "$ent" | cut -d: -f3)"
    home="$(printf '%s' "$ent" | cut -d: -f6)"
    rt="/run/user/$uid"
    [ -d "$rt" ] || die "$rt is missing: run scripts/setup.sh first"
    as_user() {
        (cd / && runuser -u "$U" -- env -i HOME="$home" USER="$U" LOGNAME="$U" PATH="$PATH_ENV" \
            XDG_RUNTIME_DIR="$rt" LANG=C.UTF-8 "$@")
    }
else
    U="$(id -un)"
    as_user() { "$@"; }
fi
command -v podman >/dev/null 2>&1 ||
    die "podman is not installed: install it with your package manager (e.g. apt-get install podman)"

recipe_hash() { # recipe dir -> hash of its files and RECIPE_VERSION
    (cd "$HERE/$1" && { echo "$RECIPE_VERSION"; sha256sum -- *; } | sha256sum | cut -c1-16)
}

# 0 if IMAGE must be (re)built; prints why.
needs_build() { # image hash
    [ "$force" = 0 ] || { say "$1: rebuilding (--force)"; return 0; }
    as_user podman image exists "$1" || { say "$1: missing, building it"; return 0; }
    local have
    have="$(as_user podman image inspect --format '{{index .Labels "buildr.recipe"}}' "$1" 2>/dev/null || true)"
    if [ "$have" = "$2" ]; then
        say "$1 present"
        return 1
    fi
    say "$1: recipe changed ($have -> $2), rebuilding"
    return 0
}

old_id() { as_user podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
drop_old() { # old id, image
    local now
    now="$(old_id "$2")"
    if [ -n "$1" ] && [ "$1" != "$now" ]; then as_user podman rmi "$1" >/dev/null 2>&1 || true; fi
}

tmp="$(mktemp -d "${TMPDIR:-/var/tmp}/buildr-images.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp" # root mode: the user imports from here

# The Debian mirror(s) apt uses on this machine, as "deb URI SUITE main" lines.
debian_sources() {
    command -v apt-get >/dev/null 2>&1 || return 0
    # shellcheck disable=SC2016 # apt's own $(FIELD) placeholders
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
        'Identifier: Packages' 'Origin: Debian' 2>/dev/null |
        awk '$2 ~ /^bookworm(-updates|-security)?$/ && $3 == "main" { print "deb " $1 " " $2 " main" }' |
        sort -u
}

build_gcc() {
    local hash old t0=$SECONDS
    hash="$(recipe_hash buildr-gcc)"
    needs_build "$GCC_IMAGE" "$hash" || return 0
    command -v mmdebstrap >/dev/null 2>&1 ||
        die "mmdebstrap is not installed: install it (e.g. apt-get install mmdebstrap) to build $GCC_IMAGE"
    local include
    include="$(grep -v '^#' "$HERE/buildr-gcc/packages.txt" | grep . | paste -sd, -)"
    local -a mirrors=() aptopts=()
    local line key val
    while IFS= read -r line; do mirrors+=("$line"); done < <(debian_sources)
    [ "${#mirrors[@]}" -gt 0 ] || say "no bookworm mirror found in apt's lists: using mmdebstrap's default"
    # Carry over the host apt settings that decide whether the mirror can be reached at all.
    if command -v apt-config >/dev/null 2>&1; then
        for key in Acquire::http::Proxy Acquire::https::Proxy Acquire::Check-Valid-Until Acquire::Check-Date; do
            val=""
            eval "$(apt-config shell val "$key")"
            [ -z "$val" ] || aptopts+=("--aptopt=$key \"$val\"")
        done
    fi
    say "mmdebstrap bookworm minbase + $include from ${mirrors[*]:-default mirror}"
    if ! mmdebstrap --variant=minbase --include="$include" --format=tar "${aptopts[@]}" \
        bookworm "$tmp/rootfs.tar" "${mirrors[@]}" >"$tmp/mmdebstrap.log" 2>&1 </dev/null; then
        tail -n 20 "$tmp/mmdebstrap.log" >&2
        die "mmdebstrap failed (see above)"
    fi
    chmod 0644 "$tmp/rootfs.tar"
    old="$(old_id "$GCC_IMAGE")"
    as_user podman import --quiet \
        --change 'CMD ["/bin/bash"]' --change "ENV PATH=$PATH_ENV" \
        --change "LABEL buildr.recipe=$hash" \
        "$tmp/rootfs.tar" "$GCC_IMAGE" >/dev/null || die "podman import of $GCC_IMAGE failed"
    drop_old "$old" "$GCC_IMAGE"
    rm -f "$tmp/rootfs.tar"
    say "built $GCC_IMAGE in $((SECONDS - t0)) s"
}

find_static_busybox() {
    local c
    for c in /bin/busybox /usr/bin/busybox; do
        [ -x "$c" ] || continue
        case "$(LC_ALL=C ldd "$c" 2>&1 || true)" in
            *"not a dynamic executable"* | *"statically linked"*)
                printf '%s' "$c"
                return 0
                ;;
        esac
    done
    return 1
}

build_busybox() {
    local hash old bb ctx app t0=$SECONDS
    hash="$(recipe_hash buildr-busybox)"
    needs_build "$BUSYBOX_IMAGE" "$hash" || return 0
    bb="$(find_static_busybox)" ||
        die "no static busybox: install it (e.g. apt-get install busybox-static) to build $BUSYBOX_IMAGE"
    ctx="$tmp/busybox"
    mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/root"
    install -d -m 1777 "$ctx/rootfs/tmp"
    install -m 0755 "$bb" "$ctx/rootfs/bin/busybox"
    # What `busybox --install -s` does inside the image: a symlink per applet.
    for app in $("$bb" --list-full); do
        [ "$app" = bin/busybox ] && continue
        mkdir -p "$ctx/rootfs/$(dirname "$app")"
        ln -sfn /bin/busybox "$ctx/rootfs/$app"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ctx/rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/rootfs/etc/group"
    cp "$HERE/buildr-busybox/Containerfile" "$ctx/Containerfile"
    chmod -R a+rX "$ctx"
    old="$(old_id "$BUSYBOX_IMAGE")"
    as_user podman build --quiet --layers=false --pull=never --label "buildr.recipe=$hash" \
        -t "$BUSYBOX_IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null || die "podman build of $BUSYBOX_IMAGE failed"
    drop_old "$old" "$BUSYBOX_IMAGE"
    # It must hold no libc or dynamic loader at all.
    local libs
    libs="$(as_user podman run --rm --network none "$BUSYBOX_IMAGE" \
        find / -xdev \( -name 'libc.so*' -o -name 'libc-*' -o -name 'ld-linux*' -o -name 'ld-musl*' \) 2>&1)" ||
        die "podman run of the new $BUSYBOX_IMAGE failed: $libs"
    [ -z "$libs" ] || die "$BUSYBOX_IMAGE holds a libc, it must not: $libs"
    say "built $BUSYBOX_IMAGE in $((SECONDS - t0)) s (static busybox, no libc)"
}

build_busybox
build_gcc
