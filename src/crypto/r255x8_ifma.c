/*
 * The batched ristretto255 algorithm (r255x8_impl.h) on AVX-512 IFMA lanes
 * (r255x8_lanes_ifma.h). The only file built with -mavx512f -mavx512ifma
 * (CMakeLists.txt sets them on this file alone, when the compiler has them),
 * so no other code can pick up AVX-512 instructions; nothing here runs unless
 * the dispatcher (backend.c) found the CPU and OS support.
 */
#include "crypto/r255x8.h"

#include <stddef.h>

#if defined(__AVX512F__) && defined(__AVX512IFMA__)

#include "crypto/r255x8_lanes_ifma.h"

#define R255X8_FN(name) r255x8_ifma_##name
#define R255X8_BACKEND cr__r255x8_ifma_lanes
#include "crypto/r255x8_impl.h"

const cr_r255x8_backend *const cr__r255x8_ifma = &cr__r255x8_ifma_lanes;

#else

const cr_r255x8_backend *const cr__r255x8_ifma = NULL;

#endif
