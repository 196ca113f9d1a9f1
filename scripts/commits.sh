#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fails when a commit after BASE has a subject over 72 characters (CONTRIBUTING.md, "Commits").
# The rule starts at BASE: 229 of the 337 subjects up to it are longer (up to 794 characters), and
# published history is not rewritten.
# usage: scripts/commits.sh [BASE (default: the commit the rule starts after)] [TIP (default HEAD)]
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
base="${1:-4e24d4c6f38293cc9045cc43bf3328f0292edfd0}"
tip="${2:-HEAD}"
cd "$top"
git cat-file -e "$base^{commit}" 2>/dev/null ||
    { echo "commits: skipped: base $base is not in this clone (a shallow checkout; fetch more history)" >&2; exit 0; }
bad=0 n=0
while IFS= read -r line; do
    n=$((n + 1))
    subject="${line#* }"
    if [ "${#subject}" -gt 72 ]; then
        echo "commits: ${line%% *}: subject of ${#subject} characters (at most 72): $subject" >&2
        bad=$((bad + 1))
    fi
done < <(git log --no-merges --format='%h %s' "$base..$tip")
echo "commits: $n after ${base:0:7}, $bad with a subject over 72 characters"
[ "$bad" -eq 0 ]
