#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the libFuzzer targets in fuzz/ (clang, ASan + UBSan) and runs each for a bounded time on
# a copy of its checked-in seed corpus (fuzz/corpus/NAME). The index target (the plugin's index files
# reader) links FAISS: libfaiss_c.a from $FGMM_DEPS_DIR/faiss_c (default .deps, scripts/setup.sh)
# and Debian's libfaiss.a, neither instrumented. Exits non-zero on a crash, a sanitizer
# report, a leak, a timeout or an allocation above the limit; the input is left in
# build-fuzz/artifacts/ (add it to the corpus and a GoogleTest case).
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET...]
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(vecs hdf5 model index)
out="$top/build-fuzz"; mkdir -p "$out/artifacts"
CC="${CC:-clang}"; CXX="${CXX:-clang++}"
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DFGMM_WITH_HDF5
       -I"$top/capi" -I"$top/src/core" $(pkg-config --cflags hdf5))
lib=("$top/src/core/error.c" "$top/src/core/file.c" "$top/src/core/model.c" "$top/src/io/vecs_io.c")
# fuzz_index: the plugin and the CPU library (no CUDA sources: src/driver/engine.c stubs the GPU creator),
# compiled without OpenMP (clang's runtime is not GCC's, which FAISS and OpenBLAS use: the pragmas
# are ignored, the code runs serially), linked with FAISS, OpenBLAS (OpenMP build) and libgomp.
build_index() {
    local faiss_c="${FGMM_DEPS_DIR:-$top/.deps}/faiss_c" blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
    [ -f "$faiss_c/lib/libfaiss_c.a" ] || { echo "fuzz: no $faiss_c/lib/libfaiss_c.a (run scripts/setup.sh)"; exit 1; }
    local obj="$out/obj_index" objs=() s o
    mkdir -p "$obj"
    local inc=(-I"$top/capi" -I"$top/src/core" -I"$top/plugin" -I"$faiss_c/include" -I/usr/include/x86_64-linux-gnu/openblas-openmp)
    # every CPU source of the library and the plugin (globs: a new file needs no edit here)
    local srcs=("$top"/src/{core,cpu,driver,io}/*.c "$top"/plugin/*.c "$top"/plugin/*.cpp "$top/fuzz/fuzz_index.c")
    for s in "${srcs[@]}"; do
        o="$obj/$(basename "$s").o"; objs+=("$o")
        if [ "${s##*.}" = cpp ]; then
            "$CXX" "${flags[@]}" -std=c++17 -Wno-unknown-pragmas "${inc[@]}" -c -o "$o" "$s"
        else
            "$CC" "${flags[@]}" -Wno-unknown-pragmas "${inc[@]}" -c -o "$o" "$s"
        fi
    done
    "$CXX" -fsanitize=fuzzer,address,undefined -o "$out/fuzz_index" "${objs[@]}" "$faiss_c/lib/libfaiss_c.a" \
        /usr/lib/x86_64-linux-gnu/libfaiss.a -L"$blas" -Wl,-rpath,"$blas" -lopenblas -llapack -lgomp \
        $(pkg-config --libs hdf5) -lm
}
for t in "${targets[@]}"; do
    echo "fuzz: building fuzz_$t"
    if [ "$t" = index ]; then
        build_index
    else
        "$CC" "${flags[@]}" -o "$out/fuzz_$t" "$top/fuzz/fuzz_$t.c" "${lib[@]}" $(pkg-config --libs hdf5) -lm
    fi
done
# Which code a crash report blames: the first stack frame in our sources or in libhdf5.
blame() {
    grep -E '^ *#[0-9]+ ' "$1" | grep -m1 -E "libhdf5|$top/(src|plugin|fuzz)/" | grep -q libhdf5 && echo libhdf5 || echo ours
}
# libhdf5 (not ours, not instrumented) leaks on some failed opens and makes huge internal
# allocations for corrupt headers; for the HDF5 target its leaks are suppressed and a failed
# allocation returns NULL, as it does in production (see blame for what remains).
san_env() {
    if [ "$1" = hdf5 ]; then
        echo "ASAN_OPTIONS=allocator_may_return_null=1 LSAN_OPTIONS=suppressions=$top/fuzz/lsan_hdf5.supp"
    fi
}
# The re-run's: a single allocation over 512 MB is an error with its stack (never NULL).
rerun_env() {
    echo "ASAN_OPTIONS=allocator_may_return_null=0:max_allocation_size_mb=512"
    if [ "$1" = hdf5 ]; then echo "LSAN_OPTIONS=suppressions=$top/fuzz/lsan_hdf5.supp"; fi
}
status=0
for t in "${targets[@]}"; do
    work="$out/corpus_$t"; rm -rf "$work"; mkdir -p "$work"
    rm -f "$out/artifacts/${t}_"*
    echo "fuzz: fuzz_$t for ${secs}s"
    # Fork mode keeps going after a crash; every crashing input is re-run and judged below.
    # -rss_limit_mb also caps single allocations (malloc above it is reported).
    env $(san_env "$t") TMPDIR="$out" "$out/fuzz_$t" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$out/artifacts/${t}_" "$work" "$top/fuzz/corpus/$t" >"$out/fuzz_$t.log" 2>&1 || true
    grep -E '^#[0-9]+: cov' "$out/fuzz_$t.log" | tail -1 || true
    for a in "$out/artifacts/${t}_"*; do
        [ -e "$a" ] && [ "${a%.report}" = "$a" ] || continue
        rep="$a.report"
        # The re-run reports any single allocation over 512 MB with its stack, so that an input
        # which outgrew the resident limit is blamed on the code that allocated the memory. ASan
        # refuses it before mapping it: libFuzzer's malloc hook runs only after, and ASan's shadow
        # of a 20 GB block (2.5 GB) had tripped the resident limit first, with no stack to blame.
        env $(rerun_env "$t") TMPDIR="$out" "$out/fuzz_$t" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 "$a" \
            >"$rep" 2>&1 && continue
        if [ "$(blame "$rep")" = libhdf5 ]; then
            echo "fuzz: $a: inside libhdf5 (known limitation, docs/promises.md): $(grep -m1 -E 'ERROR|ALARM' "$rep")"
        else
            echo "fuzz: $a FAILED in our code:"; grep -E 'ERROR|ALARM|^ *#[0-9]+ ' "$rep" | head -25; status=1
        fi
    done
done
exit $status
