/* fuzz.h — the contract between fuzz targets and their two drivers.
 *
 * A target defines LLVMFuzzerTestOneInput (libFuzzer's entry point; built
 * by `make fuzz` with clang -fsanitize=fuzzer) and may define gl_fuzz_seed
 * to hand out well-formed seed inputs. The standalone driver
 * (standalone.c, linked into `make test`) replays a fixed, seeded run of
 * random inputs and mutations of those seeds, or the files named on its
 * command line (to reproduce a crash libFuzzer found).
 */
#ifndef GL_FUZZ_H
#define GL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Seed i (0, 1, ...) into a malloc'd buffer the driver frees; returns NULL
 * when there are no more. Optional (weak). */
uint8_t *gl_fuzz_seed(size_t i, size_t *len) __attribute__((weak));

#endif
