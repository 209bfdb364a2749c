/*
 * Internal to the dataset layer: building a data set from rows when the
 * template has several match keys (records.c), called by the loader
 * (dataset.c) for each row it accepts.
 */
#ifndef CR_DATASET_INTERNAL_H
#define CR_DATASET_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/dataset.h"

typedef struct cr__records cr__records;

/*
 * A builder for template t and the loading party's role. hdr (nhdr names)
 * is the file's header: every key column must be in it (the loader checked
 * the template's required columns, which hold them). CR_EINVAL when one is
 * not, CR_ENOMEM.
 */
CR_NODISCARD int cr__records_new(cr__records **out, const cr_template *t, cr_role role,
                                 char *const *hdr, size_t nhdr);
void cr__records_free(cr__records *b);

/*
 * Normalizes every key of one row (fields in header order). Returns 0 when
 * at least one key is valid: the row's values are staged and the caller
 * must call cr__records_commit next. Returns 1 when none is (*why:
 * CR_REJECT_MISSING when every key is empty, else the first invalid key's
 * reason): nothing is staged. Negative: CR_EINVAL (a key the normalizer
 * cannot apply, e.g. a bad default_country_code), CR_ENOMEM.
 */
int cr__records_row(cr__records *b, const char *const *fields, const size_t *lens,
                    cr_reject_reason *why);
/* Commits the staged row with its label (an index into the loader's label
 * table, 0 when not grouped). */
CR_NODISCARD int cr__records_commit(cr__records *b, uint32_t label);

/*
 * Builds d's values, its elements (records on the counted side, values on
 * the other), the per-key skip counts and the merge counts. *labels gets
 * each element's label (its first row's; malloc'ed, n entries) when grouped,
 * NULL otherwise; d->label_conflicts counts elements whose rows carry
 * different labels. CR_ENOMEM, or CR_EDATA when the set exceeds 2^32 - 1
 * values.
 */
CR_NODISCARD int cr__records_finish(cr__records *b, cr_dataset *d, int grouped, uint32_t **labels);

#endif
