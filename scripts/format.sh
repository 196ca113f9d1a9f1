#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# clang-format (.clang-format) over the tracked C, C++ and CUDA sources.
# usage: scripts/format.sh [--check] [FILE...]   (no FILE: every tracked source)
#   --check: formats nothing; lists each file that differs with the number of lines that would
#            change, and fails if any does.
# clang-format's output differs between major versions: CLANG_FORMAT picks the binary (default
# clang-format-14, else clang-format).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
check=0
[ "${1:-}" = --check ] && { check=1; shift; }
cf="${CLANG_FORMAT:-$(command -v clang-format-14 || command -v clang-format || true)}"
[ -n "$cf" ] || { echo "format: no clang-format (apt-get install clang-format-14)" >&2; exit 2; }
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(git ls-files '*.c' '*.h' '*.cpp' '*.cu' '*.cuh')
if [ $check = 0 ]; then
    "$cf" -i --style=file "${files[@]}"
    exit 0
fi
bad=0 lines=0
for f in "${files[@]}"; do
    n=$("$cf" --style=file "$f" | diff "$f" - | grep -c '^>' || true)
    if [ "$n" -gt 0 ]; then
        echo "format: $f: $n lines"
        bad=$((bad + 1)) lines=$((lines + n))
    fi
done
echo "format: ${#files[@]} files, $bad differ from .clang-format ($lines lines would change)"
[ $bad -eq 0 ]
