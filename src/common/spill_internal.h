/*
 * cleanroom — common: what the spill's unit tests may see of a sorter's
 * runs (tests/unit/test_spill.c). Not part of the public API: nothing but
 * the tests includes this.
 */
#ifndef CLEANROOM_COMMON_SPILL_INTERNAL_H
#define CLEANROOM_COMMON_SPILL_INTERNAL_H

#include "cleanroom/common.h"

#include <stddef.h>
#include <stdint.h>

/* Plaintext bytes per secretstream chunk of a run. */
#define CR__SPILL_CHUNK 65536
/* What a sorter is always granted, whatever the budget says. */
#define CR__SPILL_MIN_BYTES 65536

/* The descriptor of the file holding the sorter's runs (-1 when none). */
int cr__sorter_run_fd(const cr_sorter *s);
/* The number of runs the sorter holds now, and where run i lies in the file. */
size_t cr__sorter_runs(const cr_sorter *s);
int cr__sorter_run_span(const cr_sorter *s, size_t i, uint64_t *offset, uint64_t *len);
/* Merge passes done by cr_sorter_finish (0: the runs were merged when read). */
unsigned cr__sorter_merge_passes(const cr_sorter *s);

#endif
