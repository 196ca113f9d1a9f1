/* SPDX-License-Identifier: MIT */
/* skip_potential.c (issue 26's analysis; not built by CMake): how many (64-row, BC-component) tiles of the
 * E-step hold only responsibilities below 2^-24 (fp16's smallest value) or 2^-30, for three orders of rows
 * and components: as given; rows sorted by their best component; that with the components in a k-d order
 * (recursive median splits along the widest dimension). Also pass 1's warp tiles (16 rows x 128) in
 * which no row needs an exponential (tile max below running max - 30). Float64 throughout.
 *   gcc -O3 -march=native -fopenmp -o skip_potential docs/results/skip_potential.c -lm
 *   flashgmm train learn.bvecs --k 1024 --backend cpu --out m.model
 *   ./skip_potential m.model base.bvecs NROWS [BC = 128]     (isotropic models, .bvecs rows) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int K, D;
static float *mu, *var, *w;
static int* g_key;
static int cmpk(const void* a, const void* b) {
    int x = *(const int*)a, y = *(const int*)b;
    return g_key[x] != g_key[y] ? (g_key[x] < g_key[y] ? -1 : 1) : (x < y ? -1 : x > y);
}
/* recursive median split of components along their widest dimension: leaves of 128 in order */
static float* g_proj;
static int cmpf(const void* a, const void* b) {
    float x = g_proj[*(const int*)a], y = g_proj[*(const int*)b];
    return x < y ? -1 : x > y;
}
static void kd_order(int* ids, int n) {
    if (n <= 64) return;
    int best = 0;
    double bv = -1;
    for (int j = 0; j < D; j++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < n; i++) {
            double v = mu[(size_t)ids[i] * D + j];
            s += v, s2 += v * v;
        }
        double v = s2 / n - (s / n) * (s / n);
        if (v > bv) bv = v, best = j;
    }
    for (int i = 0; i < n; i++) g_proj[ids[i]] = mu[(size_t)ids[i] * D + best];
    qsort(ids, n, sizeof(int), cmpf);
    kd_order(ids, n / 2);
    kd_order(ids + n / 2, n - n / 2);
}

int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb");
    char magic[8];
    int32_t hdr[3];
    if (!f || fread(magic, 1, 8, f) != 8 || fread(hdr, 4, 3, f) != 3) return 1;
    K = hdr[0], D = hdr[1];
    if (hdr[2] != 0) return 2;
    mu = malloc(sizeof(float) * K * D), var = malloc(sizeof(float) * K), w = malloc(sizeof(float) * K);
    if (fread(mu, 4, (size_t)K * D, f) != (size_t)K * D || fread(var, 4, K, f) != (size_t)K ||
        fread(w, 4, K, f) != (size_t)K)
        return 3;
    fclose(f);
    long long n = atoll(argv[3]);
    FILE* g = fopen(argv[2], "rb");
    float* x = malloc(sizeof(float) * n * D);
    unsigned char* row = malloc(D);
    for (long long i = 0; i < n; i++) {
        int32_t dd;
        if (fread(&dd, 4, 1, g) != 1 || dd != D || fread(row, 1, D, g) != (size_t)D) return 4;
        for (int j = 0; j < D; j++) x[i * D + j] = row[j];
    }
    fclose(g);
    /* log2 densities (float64), per row: its maximum and lse */
    double* b2 = malloc(sizeof(double) * K);
    double* h2 = malloc(sizeof(double) * K);
    for (int k = 0; k < K; k++) {
        h2[k] = 1.0 / (2.0 * var[k] * log(2.0));
        b2[k] = (log(w[k]) - 0.5 * D * (log(2 * M_PI) + log(var[k]))) / log(2.0);
    }
    float* l = malloc(sizeof(float) * n * K); /* l - lz (log2 responsibility) */
    int* arg = malloc(sizeof(int) * n);
    long long nsig[4] = {0};
#pragma omp parallel for schedule(dynamic, 256) reduction(+ : nsig[:4])
    for (long long i = 0; i < n; i++) {
        const float* xi = x + i * D;
        double mx = -INFINITY, *li = malloc(sizeof(double) * K);
        int am = 0;
        for (int k = 0; k < K; k++) {
            const float* m = mu + (size_t)k * D;
            double s = 0;
            for (int j = 0; j < D; j++) {
                double t = xi[j] - m[j];
                s += t * t;
            }
            li[k] = b2[k] - h2[k] * s;
            if (li[k] > mx) mx = li[k], am = k;
        }
        double sum = 0;
        for (int k = 0; k < K; k++) sum += exp2(li[k] - mx);
        double lz = mx + log2(sum);
        for (int k = 0; k < K; k++) {
            l[i * K + k] = (float)(li[k] - lz);
            nsig[0] += l[i * K + k] > -24;
            nsig[1] += l[i * K + k] > -30;
            nsig[2] += l[i * K + k] > -10;
        }
        arg[i] = am;
        free(li);
    }
    printf("rows %lld, K %d, D %d: significant components per row: %.2f (r > 2^-10), %.2f (> 2^-24), %.2f (> 2^-30)\n",
           n, K, D, (double)nsig[2] / n, (double)nsig[0] / n, (double)nsig[1] / n);
    /* orders */
    int* rows_file = malloc(sizeof(int) * n);
    int* rows_sorted = malloc(sizeof(int) * n);
    for (long long i = 0; i < n; i++) rows_file[i] = rows_sorted[i] = (int)i;
    int* comp_id = malloc(sizeof(int) * K);
    int* comp_kd = malloc(sizeof(int) * K);
    for (int k = 0; k < K; k++) comp_id[k] = comp_kd[k] = k;
    g_proj = malloc(sizeof(float) * K);
    kd_order(comp_kd, K);
    int* pos_kd = malloc(sizeof(int) * K); /* position of component k in the kd order */
    for (int p = 0; p < K; p++) pos_kd[comp_kd[p]] = p;
    /* rows sorted by their best component's position in the component order used */
    const char* names[3] = {"file order, components as trained", "rows by best component",
                            "rows by best component, components kd-ordered"};
    for (int v = 0; v < 3; v++) {
        int* rows = rows_file;
        const int* cpos = v == 2 ? pos_kd : comp_id; /* position of each component */
        if (v >= 1) {
            int* key = malloc(sizeof(int) * n);
            for (long long i = 0; i < n; i++) key[i] = cpos[arg[i]];
            g_key = key;
            qsort(rows_sorted, n, sizeof(int), cmpk);
            rows = rows_sorted;
            free(key);
        }
        const int* corder = v == 2 ? comp_kd : comp_id;
        for (int th = 0; th < 2; th++) {
            const float T = th ? -30.f : -24.f;
            long long tiles = 0, skip = 0, wt = 0, wskip = 0;
            /* pass 2 tiles: 64 rows x 128 components; pass 1 warp tiles: 16 rows x 128, skip exps when every
             * row's tile max < running max - 30 (running max: file order of the component tiles) */
            const int BC = argc > 4 ? atoi(argv[4]) : 128;
            for (long long r0 = 0; r0 + 64 <= n; r0 += 64)
                for (int c0 = 0; c0 < K; c0 += BC) {
                    int sig = 0;
                    for (int r = 0; r < 64 && !sig; r++)
                        for (int c = 0; c < BC; c++)
                            if (l[(size_t)rows[r0 + r] * K + corder[c0 + c]] > T) {
                                sig = 1;
                                break;
                            }
                    tiles++, skip += !sig;
                }
            if (th == 0)
                for (long long r0 = 0; r0 + 16 <= n; r0 += 16) {
                    float run[16];
                    for (int r = 0; r < 16; r++) run[r] = -INFINITY;
                    for (int c0 = 0; c0 < K; c0 += 128) {
                        int need = 0;
                        for (int r = 0; r < 16; r++) {
                            float tm = -INFINITY;
                            for (int c = 0; c < 128; c++) {
                                float v2 = l[(size_t)rows[r0 + r] * K + corder[c0 + c]];
                                tm = v2 > tm ? v2 : tm;
                            }
                            float nm = tm > run[r] ? tm : run[r];
                            need |= tm > nm - 30;
                            run[r] = nm;
                        }
                        wt++, wskip += !need;
                    }
                }
            if (th == 0)
                printf(
                    "%-48s pass 2 tiles all r < 2^%d: %5.1f%%; pass 1 warp tiles without a needed exponential: %5.1f%%\n",
                    names[v], (int)T, 100.0 * skip / tiles, 100.0 * wskip / wt);
            else printf("%-48s pass 2 tiles all r < 2^%d: %5.1f%%\n", names[v], (int)T, 100.0 * skip / tiles);
        }
    }
    return 0;
}
