/* Quantizes raw little-endian float32 rows with ggml's reference quantizers
 * (quantize_row_*_ref in ggml/src/ggml-quants.c), the path llama-quantize takes without an
 * imatrix, and writes the blocks:
 *
 *     quantize TYPE IN.f32 OUT.bin        TYPE: Q4_K, Q5_K or Q6_K
 *
 * Built by scripts/ggml-quantize-reference.sh together with ggml-quants.c of the pinned
 * llama.cpp source. Only the three row quantizers are called; the stubs below stand in for the
 * parts of ggml that ggml-quants.c links against but these never reach. */
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include "ggml-quants.h"

void ggml_abort(const char *file, int line, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "ggml_abort %s:%d: ", file, line);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    abort();
}

static void unreachable(const char *name) {
    fprintf(stderr, "quantize: %s is not part of the reference row quantizers\n", name);
    abort();
}
size_t ggml_row_size(enum ggml_type type, int64_t ne) { (void)type; (void)ne; unreachable("ggml_row_size"); return 0; }
size_t ggml_type_size(enum ggml_type type) { (void)type; unreachable("ggml_type_size"); return 0; }
const char *ggml_type_name(enum ggml_type type) { (void)type; unreachable("ggml_type_name"); return 0; }

enum { QK = 256 };

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s Q4_K|Q5_K|Q6_K IN.f32 OUT.bin\n", argv[0]);
        return 64;
    }
    size_t block_bytes;
    if (strcmp(argv[1], "Q4_K") == 0) block_bytes = sizeof(block_q4_K);
    else if (strcmp(argv[1], "Q5_K") == 0) block_bytes = sizeof(block_q5_K);
    else if (strcmp(argv[1], "Q6_K") == 0) block_bytes = sizeof(block_q6_K);
    else {
        fprintf(stderr, "quantize: unsupported type %s (Q4_K, Q5_K, Q6_K)\n", argv[1]);
        return 2;
    }
    FILE *in = fopen(argv[2], "rb");
    if (!in) { perror(argv[2]); return 2; }
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    if (size < 0 || size % (QK * sizeof(float)) != 0) {
        fprintf(stderr, "%s: %ld bytes is not a whole number of %d-value blocks\n", argv[2], size, QK);
        return 2;
    }
    size_t count = (size_t)size / sizeof(float), blocks = count / QK;
    float *values = malloc(count * sizeof(float) + 1);
    unsigned char *out = malloc(blocks * block_bytes + 1);
    if (!values || !out || fread(values, sizeof(float), count, in) != count) { fprintf(stderr, "%s: read failed\n", argv[2]); return 2; }
    fclose(in);
    if (strcmp(argv[1], "Q4_K") == 0) quantize_row_q4_K_ref(values, (block_q4_K *)out, (int64_t)count);
    else if (strcmp(argv[1], "Q5_K") == 0) quantize_row_q5_K_ref(values, (block_q5_K *)out, (int64_t)count);
    else quantize_row_q6_K_ref(values, (block_q6_K *)out, (int64_t)count);
    FILE *file = fopen(argv[3], "wb");
    if (!file || fwrite(out, 1, blocks * block_bytes, file) != blocks * block_bytes || fclose(file) != 0) { perror(argv[3]); return 2; }
    return 0;
}
