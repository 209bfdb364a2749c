/*
 * The batched ristretto255 algorithm (r255x8_impl.h) on portable C lanes
 * (r255x8_lanes_emul.h): the CLEANROOM_CRYPTO=emulated backend, and the
 * build of the algorithm the tests run on machines without AVX-512 IFMA.
 * Compiled with the project's ordinary flags.
 */
#include "crypto/r255x8_lanes_emul.h"

#define R255X8_FN(name) r255x8_emul_##name
#define R255X8_BACKEND cr__r255x8_emulated
#include "crypto/r255x8_impl.h"
