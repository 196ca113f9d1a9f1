#!/bin/sh
# SPDX-License-Identifier: MIT
# The shared libraries export exactly the functions that capi/ declares (and FAISS's C API):
#   tests/exports.sh SRC_DIR LIB HEADER... [-- LIB HEADER...]
# Fails with the names that differ.
set -eu
src="$1"; shift
status=0
while [ $# -gt 0 ]; do
    lib="$1"; shift
    headers=""
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do headers="$headers $src/capi/$1"; shift; done
    [ $# -gt 0 ] && shift
    want=$(cat $headers | grep -oE 'fgmm_[a-z0-9_]+[[:space:]]*\(' | sed 's/[[:space:]]*($//' | sort -u)
    have=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -v '^faiss_' | sed 's/@.*//' | sort -u)
    if [ "$want" != "$have" ]; then
        echo "exports of $lib differ from capi/ (< declared only, > exported only):"
        printf '%s\n' "$want" > "${TMPDIR:-/tmp}/fgmm_want.$$"
        printf '%s\n' "$have" > "${TMPDIR:-/tmp}/fgmm_have.$$"
        diff "${TMPDIR:-/tmp}/fgmm_want.$$" "${TMPDIR:-/tmp}/fgmm_have.$$" || true
        rm -f "${TMPDIR:-/tmp}/fgmm_want.$$" "${TMPDIR:-/tmp}/fgmm_have.$$"
        status=1
    else
        echo "$lib: $(printf '%s\n' "$want" | wc -l) public functions, nothing else"
    fi
done
exit $status
