#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The GPU session script: one device call builds nothing there (the device image has no
# FAISS/OpenBLAS/HDF5/gtest), it runs what was built here.
#   scripts/device.sh bundle          (here) build, then copy binaries + non-system libs to .devbundle/
#   scripts/device.sh run [bench...]  (on the device) GPU tests, then bench_estep; logs to $OUT
#                                     (FGMM_QUICK=1: only those; else also CPU, train, stream, assign)
#   scripts/device.sh sanitize        (on the device) GPU tests under compute-sanitizer memcheck/racecheck
#   scripts/device.sh ws              (on the device) the warp-specialised pass 2: tests, sanitizers, old vs new
#   scripts/device.sh ncu [shape]     (on the device) Nsight Compute profile of the two fused kernels
#   scripts/device.sh curves NAME ARGS (on the device) build/ivf_curves ARGS --out $OUT/NAME (GPU training,
#                                     FAISS search on the host's cores); data files reach the device in
#                                     .xfer/ (see `pack`), split to fit the 64 MiB a call may carry
#   scripts/device.sh build-bench NAME ARGS (on the device) build/bench_build ARGS: FAISS's own IVF build on the
#                                     host's cores next to the project's (GPU); tables and progress to $OUT/NAME.log
#   scripts/device.sh search-bench NAME ARGS (on the device) build/bench_search ARGS on the unpacked Debian-SIFT1M
#                                     (FAISS's search and ours on the host's cores, our training on the GPU)
#   scripts/device.sh pack FILE...    (here) xz + split FILEs into .xfer/N/ pieces of <= 56 MiB (FGMM_PIECE), one
#                                     folder per device call; `unpack` (there) joins what has arrived
#                                     (names must differ: the pieces are named after the files)
# Device call:  run(command="bash scripts/device.sh run", carry=[".devbundle"])
set -uo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
# Unpacks the bundle once per machine (unless PROGRAM is there already), puts its libraries on the
# path and makes $out; sets b and out.
bundle_env() {
    b="$top/.devbundle"
    [ -f "$b/.devbundle.tar.xz" ] && [ ! -x "$b/$1" ] && tar -C "$b" -xJf "$b/.devbundle.tar.xz"
    export LD_LIBRARY_PATH="$b/lib:${LD_LIBRARY_PATH:-}"
    out="${OUT:-/tmp/out}"; mkdir -p "$out"
}
case "${1:-}" in
bundle)
    set -e
    bd="${FGMM_BUILD_DIR:-$top/build}" # another build folder (e.g. build-cuda)
    "$top/scripts/build.sh" "$bd"
    b="$top/.devbundle"; rm -rf "$b"; mkdir -p "$b/lib"
    # FGMM_BUNDLE="ivf_curves" (say) packs only those programs: room for data in the same call
    for p in ${FGMM_BUNDLE:-flashgmm_tests bench_estep bench_cpu flashgmm ivf_curves bench_build bench_search}; do cp "$bd/$p" "$b/"; done
    # libraries the device image lacks: everything not from glibc/gcc/CUDA
    for f in "$b"/*; do
        [ -f "$f" ] || continue
        ldd "$f" | awk '/=> \//{print $3}' | grep -Ev 'libc\.so|libm\.so|libgcc_s|libstdc\+\+|libpthread|libdl|librt|ld-linux|libcublas|libcudart' \
            | xargs -r -I{} cp -Ln {} "$b/lib/"
    done
    # the carry limit is 64 MiB: ship one xz archive
    tar -C "$b" -cJf "$top/.devbundle.tar.xz" . && rm -rf "$b" && mkdir -p "$b" && mv "$top/.devbundle.tar.xz" "$b/"
    du -sh "$b"
    ;;
run)
    shift
    b="$top/.devbundle"
    [ -f "$b/.devbundle.tar.xz" ] && tar -C "$b" -xJf "$b/.devbundle.tar.xz"
    # NCCL (for n_gpus) comes from the image's PyTorch wheels; the library dlopens libnccl.so.2
    nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
    export LD_LIBRARY_PATH="$b/lib:${nccl:+$nccl:}${LD_LIBRARY_PATH:-}"
    out="${OUT:-/tmp/out}"; mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$out/gpu.txt"
    cd "$top"
    timeout 300 "$b/flashgmm_tests" --gtest_filter='Gpu*' 2>&1 | tee "$out/gpu_tests.log" | grep -E '^\[  (FAILED|PASSED|  OK|SKIPPED)|Failure|error|Expected|Which|actual' | head -60
    timeout 300 "$b/bench_estep" "$@" 2>&1 | tee "$out/bench.log"
    if [ -z "${FGMM_QUICK:-}" ]; then
        timeout 120 "$b/bench_cpu" 2>&1 | tee "$out/bench_cpu.log"
        timeout 150 "$b/bench_estep" --train 1000000x1024x128 2>&1 | tee "$out/train.log"
        timeout 150 "$b/bench_estep" --train 100000x256x128 2>&1 | tee -a "$out/train.log"
        timeout 150 "$b/bench_estep" --train-diag 1000000x1024x128 2>&1 | tee -a "$out/train.log"
        timeout 200 "$b/bench_estep" --stream 200000000x1024x128 --mem-limit-mb 2048 2>&1 | tee "$out/stream.log"
        timeout 100 "$b/bench_estep" --assign 10000000x1024x96 2>&1 | tee "$out/assign.log"
        timeout 100 "$b/bench_estep" --diag 1000000x1024x64 2>&1 | tee "$out/diag.log"
        timeout 100 "$b/bench_estep" --diag 1000000x1024x128 2>&1 | tail -n +3 | tee -a "$out/diag.log"
    fi
    ;;
sanitize)
    # GPU tests under compute-sanitizer: memcheck (+ device leaks) and racecheck on the fused kernels
    b="$top/.devbundle"
    [ -f "$b/.devbundle.tar.xz" ] && tar -C "$b" -xJf "$b/.devbundle.tar.xz"
    export LD_LIBRARY_PATH="$b/lib:${LD_LIBRARY_PATH:-}"
    out="${OUT:-/tmp/out}"; mkdir -p "$out"; cd "$top"
    # (left out: the long tests (GpuTrain.SeedingMatchesHost stays: it covers the seeding and
    # device-preparation kernels), and GpuNccl.*: PyTorch's libnccl probes kernel images with
    # cudaFuncGetAttributes, which memcheck reports as API errors inside NCCL)
    timeout 300 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 "$b/flashgmm_tests" \
        --gtest_filter='Gpu*:-GpuTrain.Monotone*:GpuTrain.DeviceMstep*:GpuNccl.*:GpuEstep.FusedMatchesFloat64OnRealSift:GpuEstep.PreparedAndRawRowsAgree:GpuEstep.OnePass*:Gpu*OutOfDeviceMemory' > "$out/memcheck.log" 2>&1
    echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|FAILED" "$out/memcheck.log"
    # the out-of-memory tests fail cudaMalloc on purpose: API errors not reported there, so that rc 3
    # means an access error or a leak
    timeout 60 compute-sanitizer --tool memcheck --leak-check full --report-api-errors no --error-exitcode 3 \
        "$b/flashgmm_tests" --gtest_filter='Gpu*OutOfDeviceMemory' > "$out/memcheck_oom.log" 2>&1
    echo "memcheck (out-of-memory tests) rc=$?"; grep -E "ERROR SUMMARY|FAILED" "$out/memcheck_oom.log"
    timeout 240 compute-sanitizer --tool racecheck --error-exitcode 3 "$b/flashgmm_tests" \
        --gtest_filter='GpuEstep.FastModeHandlesAnyDataScale:GpuEstep.SmallPreparedTiles:GpuEstep.FusedDiagonalMatchesFloat64' > "$out/racecheck.log" 2>&1
    echo "racecheck rc=$?"; grep -E "RACECHECK SUMMARY|FAILED" "$out/racecheck.log"
    ;;
ws)
    # (on the device) the warp-specialised passes (kernels/estep_ws.cu, issue 26): a cold training traced
    # (this machine's first CUDA process), their tests and those of the kernels using reduce.cuh's warp
    # reductions, memcheck and racecheck on the small ones, the kernels
    # old vs new at the issue's three shapes, then a second cold training (a fresh process, warm machine) and
    # a third with eager module loading (300 s of timeouts in all)
    bundle_env flashgmm_tests; cd "$top"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader | tee "$out/gpu.txt"
    FGMM_TRACE=1 timeout 15 "$b/bench_estep" --train 1000000x1024x128 > "$out/train_cold1.log" 2>&1
    awk '/fgmm trace/; /^\| GPU/ {print; exit}' "$out/train_cold1.log" # the first training's steps
    timeout 110 "$b/flashgmm_tests" --gtest_filter='GpuEstepWs.*:GpuEstep.*:GpuKmeans.*:GpuSoar.*:GpuAssign.*' \
        > "$out/ws_tests.log" 2>&1
    echo "tests rc=$?"; grep -E '^\[  (FAILED|PASSED|  OK|SKIPPED)|Failure|Expected|Which|actual|rror' "$out/ws_tests.log" | head -40
    timeout 50 compute-sanitizer --tool memcheck --error-exitcode 3 "$b/flashgmm_tests" \
        --gtest_filter='GpuEstepWs.SmallAndPartialTiles:GpuEstepWs.StagesWrapAround' > "$out/ws_memcheck.log" 2>&1
    echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|FAILED|Invalid|out of bounds" "$out/ws_memcheck.log" | head -8
    timeout 25 compute-sanitizer --tool racecheck --error-exitcode 3 "$b/flashgmm_tests" \
        --gtest_filter='GpuEstepWs.SmallAndPartialTiles' > "$out/ws_racecheck.log" 2>&1
    echo "racecheck rc=$?"; grep -E "RACECHECK SUMMARY|FAILED|hazard" "$out/ws_racecheck.log" | head -8
    timeout 70 "$b/bench_estep" --ws --reps 10 ${FGMM_WS_SHAPES:-1000000x1024x128 10000000x1024x96 1000000x4096x128} 2>&1 | tee "$out/ws_bench.log"
    FGMM_TRACE=1 timeout 15 "$b/bench_estep" --train 1000000x1024x128 > "$out/train_cold2.log" 2>&1
    awk '/fgmm trace/; /^\| GPU/ {print; exit}' "$out/train_cold2.log" # the first training's steps
    # the same with every kernel module loaded at the context's start (CUDA's default loads each at first use)
    CUDA_MODULE_LOADING=EAGER FGMM_TRACE=1 timeout 15 "$b/bench_estep" --train 1000000x1024x128 > "$out/train_cold_eager.log" 2>&1
    awk '/fgmm trace/; /^\| GPU/ {print; exit}' "$out/train_cold_eager.log"
    ;;
ncu)
    # one profile of the fused kernels (the first fused_lse and fused_acc of the fast path) at one
    # shape (default 1M x 1024 x 128): the details page, per-SASS-line stall samples, and the SASS
    # (FGMM_NCU_K / FGMM_NCU_C: another kernel regex / count, e.g. regex:fused_onepass and 1)
    shift
    b="$top/.devbundle"
    [ -f "$b/.devbundle.tar.xz" ] && tar -C "$b" -xJf "$b/.devbundle.tar.xz"
    export LD_LIBRARY_PATH="$b/lib:${LD_LIBRARY_PATH:-}"
    out="${OUT:-/tmp/out}"; mkdir -p "$out"; cd "$top"
    timeout 300 ncu --clock-control none --set full --import-source no -k "${FGMM_NCU_K:-regex:fused_(lse|acc)}" -c "${FGMM_NCU_C:-2}" \
        -o "$out/prof" "$b/bench_estep" --reps 1 "${1:-1000000x1024x128}" > "$out/ncu_run.log" 2>&1
    echo "ncu rc=$?"; tail -3 "$out/ncu_run.log"
    ncu -i "$out/prof.ncu-rep" --page details > "$out/ncu_details.txt" 2>&1
    ncu -i "$out/prof.ncu-rep" --page source --csv --print-source sass > "$out/ncu_sass.csv" 2>&1
    cuobjdump -sass -arch sm_90a "$b/bench_estep" > "$out/sass.txt" 2>&1
    grep -E "^  [a-z_]+.*\(|Duration|Throughput|Registers|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued" "$out/ncu_details.txt" | head -60
    ;;
pack)
    shift
    x="$top/.xfer"; mkdir -p "$x/tmp"
    for f in "$@"; do
        xz -T0 -2 -c "$f" | split -b "${FGMM_PIECE:-56M}" -d - "$x/tmp/$(basename "$f").xz.part"
    done
    # one folder per call: .xfer/0, .xfer/1, ... (each carried alone, one call after another);
    # a later pack appends folders
    i=$(ls -d "$x"/[0-9]* 2>/dev/null | wc -l)
    for p in "$x"/tmp/*.part*; do mkdir -p "$x/$i"; mv "$p" "$x/$i/"; i=$((i + 1)); done
    rmdir "$x/tmp"; du -sh "$x"/[0-9]*
    ;;
unpack)
    # joins the pieces carried so far (kept in /root/xfer between calls of one warm machine)
    mkdir -p /root/xfer /root/data
    for d in "$top"/.xfer/*/; do [ -d "$d" ] && cp -n "$d"/* /root/xfer/ 2>/dev/null; done
    for f in $(ls /root/xfer/*.xz.part* 2>/dev/null | sed 's/\.xz\.part.*//' | sort -u); do
        name=$(basename "$f"); [ -f "/root/data/$name" ] && continue
        cat "$f".xz.part* | xz -dc > "/root/data/$name.tmp" 2>/dev/null && mv "/root/data/$name.tmp" "/root/data/$name" \
            || rm -f "/root/data/$name.tmp"
    done
    ls -la /root/data
    ;;
curves)
    shift
    name="$1"; shift
    bundle_env ivf_curves; mkdir -p "$out/$name"
    timeout "${FGMM_CURVES_TIMEOUT:-500}" "$b/ivf_curves" "$@" --out "$out/$name" > "$out/$name.log" 2>&1
    echo "$name: rc $?"; grep -v "^seed\|^|\|^$" "$out/$name.log" | tail -n 3; grep -A30 "^| method" "$out/$name.log" | grep -B30 -m1 "^$"
    rm -f "$out/$name/gt100.ivecs" "$out/$name/summary.md" # (the log holds the summary; 8 files come back at most)
    ;;
build-bench)
    shift
    name="$1"; shift
    bundle_env bench_build
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "$(nproc) cores"; } | tee "$out/$name.log"
    # progress (stderr) and the tables (stdout) in one log; what ran comes back in $OUT even on a timeout
    timeout "${FGMM_BENCH_TIMEOUT:-540}" "$b/bench_build" "$@" 2>&1 | tee -a "$out/$name.log"
    echo "$name: rc ${PIPESTATUS[0]}"
    ;;
search-bench)
    # build/bench_search ARGS on the data `unpack` joined (/root/data: base.bvecs, query.bvecs,
    # groundtruth.ivecs); FGMM_QUERIES=N keeps the first N queries (e.g. 1000 for the 1-thread run)
    shift
    name="$1"; shift
    bundle_env bench_search
    bash "$0" unpack >/dev/null
    q=/root/data/query.bvecs; g=/root/data/groundtruth.ivecs
    if [ -n "${FGMM_QUERIES:-}" ]; then
        head -c $((FGMM_QUERIES * 132)) "$q" > /root/data/q_$FGMM_QUERIES.bvecs; q=/root/data/q_$FGMM_QUERIES.bvecs
        head -c $((FGMM_QUERIES * 404)) "$g" > /root/data/g_$FGMM_QUERIES.ivecs; g=/root/data/g_$FGMM_QUERIES.ivecs
    fi
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "$(nproc) cores"; lscpu | grep "Model name"; } | tee -a "$out/$name.log"
    timeout "${FGMM_BENCH_TIMEOUT:-540}" "$b/bench_search" --data /root/data/base.bvecs --queries "$q" --gt "$g" "$@" 2>&1 | tee -a "$out/$name.log"
    echo "$name: rc ${PIPESTATUS[0]}"
    ;;
*)
    echo "usage: $0 bundle | run [shapes...] | sanitize | ws | ncu [shape] | pack FILE... | unpack | curves NAME ARGS | build-bench NAME ARGS | search-bench NAME ARGS" >&2; exit 2 ;;
esac
