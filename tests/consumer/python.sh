#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Python package installed two ways, each used with no environment variable and outside the
# repository: by cmake --install into $1 (the library found through the generated _config.py), and
# by pip into a venv, built offline from python/ with the library of $1 copied inside it.
set -euo pipefail
prefix="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cd "$out"  # not the repository: its python/ must not be imported
config="$(find "$prefix" -path '*/flashgmm/_config.py')"
[ -n "$config" ] || { echo "python.sh: no flashgmm/_config.py under $prefix (cmake found no python3?)" >&2; exit 1; }
site="$(dirname "$(dirname "$config")")"
env -u FLASHGMM_LIB PYTHONPATH="$site" /usr/bin/python3 "$here/check_python.py" "$prefix"
# FLASHGMM_LIB still overrides the installed path.
if FLASHGMM_LIB=/nonexistent/lib.so PYTHONPATH="$site" /usr/bin/python3 -c 'import flashgmm' 2>"$out/err"; then
    echo "python.sh: FLASHGMM_LIB=/nonexistent was not used" >&2; exit 1
fi
grep -q "/nonexistent/lib.so" "$out/err"
# pip (Debian's python3 is externally managed, PEP 668): a venv that sees python3-numpy and
# python3-faiss; --no-build-isolation: setuptools from Debian, nothing from the network. A copy of
# python/ keeps pip's build/ and egg-info out of the checkout.
/usr/bin/python3 -m venv --system-site-packages "$out/venv"
cp -r "$here/../../python" "$out/src"
FLASHGMM_LIB="$(find "$prefix" -name 'libflashgmm_ivf.so' | head -1)" \
    "$out/venv/bin/pip" install -q --no-build-isolation --no-index "$out/src"
rm -rf "$out/src"
env -u FLASHGMM_LIB "$out/venv/bin/python" "$here/check_python.py" "$out/venv"
