# shellcheck shell=bash
# Shared helpers for scripts/*.  Sourced, never run.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prog=$(basename "$0")
BUILD_DIR=${BUILD_DIR:-$top/build}
DEFAULT_PIN=$top/upstream/qemu.conf

die() { echo "$prog: $*" >&2; exit 1; }
note() { echo "$prog: $*" >&2; }

# Git identity for the commits the tooling makes (base import, git am), so
# that nothing depends on the user's git configuration.
export GIT_COMMITTER_NAME="qemu-convert-engine" \
       GIT_COMMITTER_EMAIL="tooling@invalid" \
       GIT_COMMITTER_DATE="2000-01-01T00:00:00Z"

# resolve_pin ARG: a pin file path, or a version with upstream/qemu-VER.conf
resolve_pin() {
    local a=$1
    if [ -f "$a" ]; then
        echo "$a"
    elif [ -f "$top/upstream/qemu-$a.conf" ]; then
        echo "$top/upstream/qemu-$a.conf"
    elif [ -f "$DEFAULT_PIN" ] && [ "$(sed -n 's/^QEMU_VERSION=//p' "$DEFAULT_PIN")" = "$a" ]; then
        echo "$DEFAULT_PIN"
    else
        die "unknown base '$a' (want a pin file, or a version with upstream/qemu-VERSION.conf)"
    fi
}

# load_pin CONF: sets QEMU_VERSION etc., and the per-base paths:
#   out       where patched/ and unpatched/ build directories go
#   repo      the git repository holding the base as one commit
#   series_dir the series for this base: patches/, or for another base its
#             backport patches/backports/VER/ if there is one
load_pin() {
    pin=$1
    # shellcheck source=upstream/qemu.conf
    . "$pin"
    if [ "$pin" -ef "$DEFAULT_PIN" ]; then
        out=$BUILD_DIR
    else
        out=$BUILD_DIR/base-$QEMU_VERSION
    fi
    repo=$BUILD_DIR/src/qemu-$QEMU_VERSION
    # shellcheck disable=SC2034 # used by the scripts that source this
    series_dir=${SERIES_DIR:-$top/patches}
    # Another base uses its backport variant of the series if there is one
    # (made by scripts/rebase-series --backport VER; docs/distro.md).
    if [ -z "${SERIES_DIR:-}" ] && [ "$out" != "$BUILD_DIR" ] &&
       [ -f "$top/patches/backports/$QEMU_VERSION/series" ]; then
        # shellcheck disable=SC2034
        series_dir=$top/patches/backports/$QEMU_VERSION
    fi
    # shellcheck disable=SC2034
    base_tag=base-$QEMU_VERSION
}

# The identity the stored series carries (patches/*.patch): a group alias,
# not a person; scripts/post-series replaces it with the poster's.
# shellcheck disable=SC2034
PLACEHOLDER_EMAIL=qemu-convert-engine@example.org

# series_patches DIR [--upstream]: the patch files listed in DIR/series, in
# order (quilt's format: one name a line, '#' lines are comments).  A
# comment line "# downstream: WHY" marks the patch named on the next line:
# a backport, or already upstream, carried for the distribution builds;
# --upstream leaves such patches out (what scripts/post-series posts).
series_patches() {
    local d=$1 mode=${2:-} name down=0
    [ -f "$d/series" ] || return 0
    while read -r name; do
        case "$name" in
        '# downstream: '?*) down=1; continue ;;
        ''|'#'*) continue ;;
        esac
        if [ "$mode" != --upstream ] || [ $down = 0 ]; then
            echo "$d/$name"
        fi
        down=0
    done < "$d/series"
}

# ensure_base_repo [FETCH-ARGS...]: make $repo a git repository whose one
# commit (tagged $base_tag) is the verified pinned source.
ensure_base_repo() {
    local src stamp want wt_dir
    src=$("$top/scripts/fetch-qemu" --base "$pin" "$@") || exit 1
    if [ -d "$src" ]; then
        want="dir:$src"
    else
        want="sha256:$(sha256sum "$src" | cut -d' ' -f1)"
    fi
    stamp=$repo/.git/qce-base-source
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
       git -C "$repo" rev-parse -q --verify "refs/tags/$base_tag" >/dev/null; then
        return 0
    fi
    note "importing $(basename "$src") into $repo as one commit"
    # Worktrees of an older import would point at a commit that is gone.
    # (For the default pin $out/src is build/src, which also holds the
    # repositories of the other bases: keep those.)
    rm -rf "$repo"
    for wt_dir in "$out"/src/*; do
        case "$wt_dir" in "$BUILD_DIR"/src/qemu-*) continue ;; esac
        rm -rf "$wt_dir"
    done
    mkdir -p "$repo"
    if [ -d "$src" ]; then
        tar -C "$src" --exclude=.git -cf - . | tar -C "$repo" -xf -
    else
        tar -C "$repo" --strip-components=1 -xf "$src"
    fi
    (
        cd "$repo" || exit 1
        git init -q -b base
        git add -A -f
        GIT_AUTHOR_NAME="QEMU $QEMU_VERSION" GIT_AUTHOR_EMAIL="qemu-devel@nongnu.org" \
            GIT_AUTHOR_DATE="$GIT_COMMITTER_DATE" \
            git commit -q -m "QEMU $QEMU_VERSION ($(basename "$src"))"
        git tag "$base_tag"
    )
    echo "$want" > "$stamp"
}

# ensure_worktree DIR: a detached worktree of $repo at DIR
ensure_worktree() {
    local d=$1
    if [ ! -e "$d/.git" ]; then
        rm -rf "$d"
        mkdir -p "$(dirname "$d")"
        git -C "$repo" worktree prune
        git -C "$repo" worktree add -q --detach "$d" "$base_tag"
    fi
}

# apply_series DIR PATCH...: reset worktree DIR to the base and git am the
# patches; on a conflict, say which patch and stop.
apply_series() {
    local d=$1 p log
    shift
    git -C "$d" am --abort >/dev/null 2>&1 || true
    git -C "$d" checkout -q -f --detach "$base_tag"
    git -C "$d" clean -q -fdx
    log=$(mktemp)
    for p in "$@"; do
        if ! git -C "$d" am -q --keep-cr "$p" >"$log" 2>&1; then
            git -C "$d" am --abort >/dev/null 2>&1 || true
            sed 's/^/    /' "$log" >&2
            rm -f "$log"
            die "$(basename "$p") does not apply on QEMU $QEMU_VERSION (with the patches before it applied)"
        fi
    done
    rm -f "$log"
}

# How a series is written out (export-series, lint-series, rebase-series):
# byte-stable.  --abbrev=12 fixes the length of the blob names of the
# 'index' lines, which git otherwise scales with the number of objects in
# the repository: a work tree that also holds another base (rebase-series)
# wrote 9 digits where a clean clone's re-export wrote 8.
# shellcheck disable=SC2034
EXPORT_FLAGS=(--zero-commit --no-signature -N --no-renames --stat=72 --abbrev=12)

# How every build is configured (scripts/build, scripts/debian-stack): a
# tools-only QEMU with the block drivers the series is tested with.
python=python3
[ -x /usr/bin/python3 ] && python=/usr/bin/python3
# shellcheck disable=SC2034
CONFIGURE_FLAGS=(--python="$python" --target-list= --disable-system
    --disable-user --enable-tools --disable-docs --disable-install-blobs
    --disable-download --enable-libnfs --enable-libiscsi --enable-zstd
    --enable-linux-aio --enable-linux-io-uring --enable-gnutls --enable-libssh
    --enable-curl)

# The tools every build makes, and a ninja run of them that shows the
# first errors on failure: ninja_tools BUILD-DIR LOG
TOOL_TARGETS=(qemu-img qemu-io qemu-nbd storage-daemon/qemu-storage-daemon)
ninja_tools() {
    if ! ninja -C "$1" "${TOOL_TARGETS[@]}" >"$2" 2>&1; then
        grep -E -A5 'error:|FAILED' "$2" | head -n 40 | sed 's/^/    /' >&2
        return 1
    fi
}

# The machine's own Debian mirror, from its apt configuration (so that no
# host name is ever written in this repository); empty if none is found.
# debian_source_download CACHE SUITE PACKAGE=VERSION DEST: apt-get source
# --download-only of a Debian source package into DEST, through a private
# apt configuration (CACHE/apt/SUITE, one per suite) built from the mirror
# that the machine's own apt configuration names, so that any suite's
# deb-src can be read without touching /etc/apt.  apt verifies the files
# against the signed Sources index; the callers verify the SHA-256 of what
# they use against their pin.  On failure: returns 1, the reason in
# $debian_source_error (logs in CACHE/apt/SUITE/).
debian_source_download() {
    local cache=$1 suite=$2 spec=$3 dest=$4 mirror apt_dir
    local -a apt_opts
    # shellcheck disable=SC2034 # for the caller
    debian_source_error=""
    if ! command -v apt-get >/dev/null; then
        # shellcheck disable=SC2034 # for the caller
        debian_source_error="no apt-get here"
        return 1
    fi
    mirror=$(debian_mirror)
    if [ -z "$mirror" ]; then
        # shellcheck disable=SC2034 # for the caller
        debian_source_error="no Debian mirror found in /etc/apt"
        return 1
    fi
    apt_dir=$cache/apt/$suite
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$dest"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
        > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
              -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt_dir/lists"
              -o "Dir::Cache=$apt_dir"
              -o "Debug::NoLocking=1"
              -o "Acquire::Retries=1"
              -o "Acquire::http::Timeout=20")
    if ! apt-get -qq "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1; then
        # shellcheck disable=SC2034 # for the caller
        debian_source_error="apt-get update of $suite failed (see $apt_dir/update.log)"
        return 1
    fi
    if ! (cd "$dest" && apt-get -qq "${apt_opts[@]}" source --download-only "$spec") \
            >"$apt_dir/source.log" 2>&1; then
        # shellcheck disable=SC2034 # for the caller
        debian_source_error=$(grep -m1 '^E:' "$apt_dir/source.log" || tail -n 1 "$apt_dir/source.log")
        return 1
    fi
}

debian_mirror() {
    local m
    m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{print $2}' | grep -v -e security -e nodesource -e google | head -n 1)
    if [ -z "$m" ]; then
        m=$(grep -hs '^deb ' /etc/apt/sources.list 2>/dev/null |
            grep -v security | awk '{print $2}' | head -n 1)
    fi
    echo "$m"
}
