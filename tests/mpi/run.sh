#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# flashgmm-mpi against the one-process model: CPU ranks on this machine (mpirun -np 2 and 3), each
# reading its own shard. The models must agree up to the order of the sums (models.py's TOLERANCE);
# the model of all rows but one must not (so a dropped, doubled or overlapping row fails the test);
# a NaN in the last rank's shard and a missing file make every rank exit with an error, not hang;
# ranks given different options or files (MPMD command lines) stop before any exchange.
# Usage: run.sh [BUILD_DIR]
set -euo pipefail
top="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$top/build}"
one="$build/flashgmm" mpi="$build/flashgmm-mpi"
[ -x "$mpi" ] || { echo "mpi test: $mpi was not built (no MPI found by CMake?)"; exit 1; }
command -v mpirun >/dev/null || { echo "mpi test: no mpirun (scripts/setup.sh installs openmpi-bin)"; exit 1; }
py() { python3 "$top/tests/mpi/models.py" "$@"; }
# One OpenMP thread per rank (2 cores); CI runs as root; ranks may outnumber the cores.
export OMP_NUM_THREADS=1
run_mpi() { timeout 120 mpirun --allow-run-as-root --oversubscribe -np "$@"; }
work="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT; echo "work: $work"
sift="$top/datasets/embedded/sift10K_byte.h5"
pass=0 fail=0
check() { # name, then a command that must succeed
    local name="$1"; shift
    if "$@"; then pass=$((pass + 1)); echo "ok: $name"; else fail=$((fail + 1)); echo "FAILED: $name"; fi
}

# Same model: args for both programs, ranks, a name.
same_model() {
    local np="$1" name="$2"; shift 2
    "$one" train "$@" --backend cpu --out "$work/$name.1.gmm" >"$work/$name.1.log" 2>&1 || { cat "$work/$name.1.log"; return 1; }
    run_mpi "$np" "$mpi" train "$@" --backend cpu --out "$work/$name.$np.gmm" >"$work/$name.$np.log" 2>&1 ||
        { cat "$work/$name.$np.log"; return 1; }
    py compare "$work/$name.1.gmm" "$work/$name.$np.gmm" "$work/$name.1.log" "$work/$name.$np.log"
}
# 9,000 uint8 rows (HDF5), isotropic, 2 ranks of 4,500
check "2 ranks, isotropic, HDF5 uint8" same_model 2 iso "$sift" --dataset dataset --k 16
# 5,001 float rows (.fvecs, shards of 1,667), diagonal, 3 ranks
"$one" convert "$sift" "$work/sift.bvecs" --dataset dataset --max-rows 5001 >/dev/null
check "3 ranks, diagonal, bvecs, 5,001 rows" same_model 3 diag "$work/sift.bvecs" --k 12 --cov diag --iter 15
# a sample with fewer than k distinct rows: widened over every rank's rows (the 20 distinct rows are in the last rank's shard)
py dups "$work/dups.fvecs"
check "2 ranks, k-means++ sample widened across shards" same_model 2 dups "$work/dups.fvecs" --k 8 --iter 5

# The comparison itself: the model of all rows but the last is refused.
one_row_less() {
    "$one" train "$sift" --dataset dataset --k 16 --backend cpu --max-rows 8999 --out "$work/less.gmm" >"$work/less.log" 2>&1
    ! py compare "$work/iso.1.gmm" "$work/less.gmm" "$work/iso.1.log" "$work/less.log"
}
check "a model without one row is told apart" one_row_less

# Errors: every rank exits non-zero (mpirun's status) and says why; nothing hangs (timeout 120 s).
fails_with() { # message, then flashgmm-mpi's arguments
    local want="$1" rc=0; shift
    run_mpi 2 "$mpi" train "$@" --backend cpu >"$work/err.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then echo "exit status $rc:"; cat "$work/err.log"; return 1; fi
    grep -q "$want" "$work/err.log" || { echo "no '$want' in:"; cat "$work/err.log"; return 1; }
}
python3 - "$work/nan.fvecs" <<'EOF'
import struct, sys
with open(sys.argv[1], "wb") as f:
    for i in range(400):
        f.write(struct.pack("<i4f", 4, i % 7, i % 5, i % 3, float("nan") if i == 399 else i % 11))
EOF
check "a NaN in rank 1's shard stops both ranks" fails_with "non-finite" "$work/nan.fvecs" --k 4
check "a missing file stops both ranks" fails_with "No such file" "$work/missing.fvecs" --k 4
check "k above the rows is refused by every rank" fails_with "k = 500 > n = 400" "$work/nan.fvecs" --k 500

# Ranks with different command lines (mpirun's MPMD form: rank 0 ARGS0 : rank 1 ARGS1) stop on every rank
# with a message before any exchange: a parse error on one rank hung the job, a different --cov
# corrupted the heap (SIGABRT), a different --k or --seed ended in MPI_ERR_TRUNCATE, and a different
# file of the same shape went unnoticed.
ranks_differ() { # message, rank 0's arguments, '--', rank 1's arguments
    local want="$1" rc=0 a0=() a1=(); shift
    while [ "$1" != -- ]; do a0+=("$1"); shift; done; shift; a1=("$@")
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np 1 "$mpi" "${a0[@]}" : -np 1 "$mpi" "${a1[@]}" \
        >"$work/mpmd.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then echo "exit status $rc:"; cat "$work/mpmd.log"; return 1; fi
    grep -q -- "$want" "$work/mpmd.log" || { echo "no '$want' in:"; cat "$work/mpmd.log"; return 1; }
    ! grep -q -E "TRUNCATE|Aborted|signal|free\(\)|corrupt" "$work/mpmd.log" || { cat "$work/mpmd.log"; return 1; }
}
t=(train "$work/sift.bvecs" --k 8 --iter 3 --backend cpu)
check "a parse error on rank 1 only stops both ranks" ranks_differ "rank 1: its command line is refused" \
    "${t[@]}" -- "${t[@]}" --k abc
check "a parse error on rank 0 only stops both ranks" ranks_differ "--k 'abc'" "${t[@]}" --k abc -- "${t[@]}"
check "a command other than train on rank 1 stops both" ranks_differ "want 'train FILE" "${t[@]}" -- shape "$work/sift.bvecs"
check "--help on one rank only stops both" ranks_differ "help on some ranks only" "${t[@]}" -- --help
check "a different --cov on rank 1 is refused" ranks_differ "parsed different options" "${t[@]}" -- "${t[@]}" --cov diag
check "a different --k on rank 1 is refused" ranks_differ "rank 1: its options differ" "${t[@]}" -- "${t[@]}" --k 9
check "a different --seed on rank 1 is refused" ranks_differ "parsed different options" "${t[@]}" -- "${t[@]}" --seed 7
# the same shape, other rows: rank 1 reads a copy with one byte changed (in its last 64 KiB)
cp "$work/sift.bvecs" "$work/other.bvecs"
printf '\x07' | dd of="$work/other.bvecs" bs=1 seek=$(( $(stat -c %s "$work/sift.bvecs") - 5 )) conv=notrunc status=none
check "a different file of the same shape on rank 1 is refused" ranks_differ "see different files" \
    "${t[@]}" -- train "$work/other.bvecs" "${t[@]:2}"
check "the same file under another name is the same file" \
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np 1 "$mpi" "${t[@]}" : -np 1 "$mpi" train \
    "$(cd "$work" && pwd -P)/../$(basename "$work")/sift.bvecs" "${t[@]:2}" >/dev/null

echo "mpi: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
