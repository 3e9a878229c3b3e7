/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser
 * (train_st_parse), the first thing that touches an untrusted checkpoint.
 *
 * The input is a whole file: 8-byte header length, JSON header, data. A
 * parse must either fail with an error or yield tensors whose offsets lie
 * inside the data section without overlap; anything else aborts. The
 * seeds (for the standalone driver) are a valid two-tensor file and its
 * near misses.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/trainer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    train_st_t st;
    gl_err_t err;
    if (train_st_parse(data, size, size, "fuzz", &st, &err) == GL_OK) {
        uint64_t covered = 0;
        for (size_t i = 0; i < st.n_tensors; i++) {
            const train_st_tensor_t *t = &st.tensors[i];
            if (t->begin > t->end || t->end > st.data_len || st.data_offset + t->end > size)
                abort();
            covered += t->end - t->begin;
        }
        if (covered != st.data_len)
            abort();
        (void)train_st_meta(&st, "n_layer");
        train_st_free(&st);
    } else if (!err.msg[0]) {
        abort();   /* every failure names its cause */
    }
    return 0;
}

static void seed(void (*add)(const uint8_t *, size_t), const char *hdr, size_t data_len)
{
    size_t h = strlen(hdr);
    uint8_t *buf = calloc(1, 8 + h + data_len);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, hdr, h);
    add(buf, 8 + h + data_len);
    free(buf);
}

/* Seeds for the standalone driver (tests/fuzz/standalone.c). */
void gl_fuzz_seed_corpus(void (*add)(const uint8_t *, size_t))
{
    seed(add, "{\"__metadata__\":{\"format\":\"pt\",\"n_layer\":\"1\"},"
              "\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
              "\"ln_f.bias\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[16,20]}}", 20);
    seed(add, "{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[6,10]}}", 10);
    seed(add, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
}
