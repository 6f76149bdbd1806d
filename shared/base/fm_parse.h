/* fm_parse: strict parsing of numbers from flags and config values.
 * Each returns 0, or FM_EARG with one line in `e` naming `what` (the flag or key), the
 * text (control bytes shown as '?', cut at 48 bytes: the message stays one line) and the
 * allowed range. Strict: the whole string is the number, decimal only (no white space,
 * no hex, no "inf"/"nan"), no silent wrap-around; a float that underflows reads as its
 * nearest representable value (1e-310 is accepted, 1e309 is not). */
#ifndef FM_PARSE_H
#define FM_PARSE_H

#include <stdint.h>

#include "fm_err.h"

int fm_parse_int(const char *what, const char *text, long lo, long hi, long *out, fm_errmsg_t *e);
int fm_parse_u64(const char *what, const char *text, uint64_t *out, fm_errmsg_t *e);
int fm_parse_float(const char *what, const char *text, double lo, double hi, double *out,
                   fm_errmsg_t *e);
/* An inclusive integer range "A-B" (A <= B) or "A" (= "A-A"), decimal digits only, with
 * lo <= A and B <= hi: *first = A, *last = B (written only on success). Used for client
 * ranges ([trainer] clients). */
int fm_parse_range(const char *what, const char *text, long lo, long hi, long *first, long *last,
                   fm_errmsg_t *e);

#endif
