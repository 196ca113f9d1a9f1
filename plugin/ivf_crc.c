/* SPDX-License-Identifier: MIT */
/* ivf_crc.c: CRC-32 (IEEE 802.3, zlib's crc32), slicing by 8, for the index file's sections (ivf_io.c). */
#define _POSIX_C_SOURCE 200809L /* pread */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "ivf_impl.h"

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 255];
}

uint32_t fgmm_ivf_crc32(uint32_t crc, const void* p, size_t n) {
    pthread_once(&crc_once, crc_init);
    const uint8_t* b = p;
    uint32_t c = ~crc;
    for (; n >= 8; n -= 8, b += 8) {
        uint32_t lo = c ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
        c = crc_table[7][lo & 255] ^ crc_table[6][lo >> 8 & 255] ^ crc_table[5][lo >> 16 & 255] ^
            crc_table[4][lo >> 24] ^ crc_table[3][b[4]] ^ crc_table[2][b[5]] ^ crc_table[1][b[6]] ^ crc_table[0][b[7]];
    }
    while (n--) c = crc_table[0][(c ^ *b++) & 255] ^ (c >> 8);
    return ~c;
}

int64_t fgmm_ivf_crc32_range(int fd, int64_t off, int64_t len) {
    enum { CHUNK = 1 << 20 };
    uint8_t* buf = malloc(CHUNK);
    if (!buf) return -1;
    uint32_t c = 0;
    while (len > 0) {
        ssize_t got = pread(fd, buf, len < CHUNK ? (size_t)len : CHUNK, (off_t)off);
        if (got <= 0) {
            if (got < 0 && errno == EINTR) continue;
            free(buf);
            return -1;
        }
        c = fgmm_ivf_crc32(c, buf, (size_t)got);
        off += got, len -= got;
    }
    free(buf);
    return c;
}
