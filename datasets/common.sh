# SPDX-License-Identifier: MIT
# common.sh: helpers for the fetch scripts (sourced).
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLASHGMM="$(realpath "${FLASHGMM:-$top/build/flashgmm}")"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

# check_sha256 FILE EXPECTED: fails loudly on a mismatch.
check_sha256() {
    local got; got=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$got" != "$2" ]; then echo "checksum mismatch for $1: got $got, expected $2" >&2; exit 1; fi
    echo "sha256 ok: $(basename "$1")"
}

# check_shape FILE DATASET ROWS DIMS: the file holds a ROWS x DIMS matrix (our own reader).
check_shape() {
    [ -x "$FLASHGMM" ] || "$top/scripts/build.sh" "$top/build" >/dev/null
    local got; got=$("$FLASHGMM" shape "$1" --dataset "$2" | cut -d' ' -f1,2)
    if [ "$got" != "$3 $4" ]; then echo "$1 [$2]: shape $got, expected $3 $4" >&2; exit 1; fi
    echo "shape ok: $(basename "$1") [$2] $3 x $4"
}

# ensure_debsrc: apt-get source needs a deb-src entry for bookworm main.
ensure_debsrc() { "$top/scripts/setup.sh" >/dev/null; }

# fetch URL OUT: only for the sets that live outside Debian/npm (needs internet access).
fetch() {
    if command -v curl >/dev/null; then curl -fL --retry 3 -o "$2" "$1"; else wget -O "$2" "$1"; fi
}
