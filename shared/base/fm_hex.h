/* fm_hex: bytes as lowercase hexadecimal text and back (ids and digests in JSON files:
 * high_water.json's config digest, the history files' update ids). Pure, no allocation. */
#ifndef FM_HEX_H
#define FM_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Write p[0..n) as 2n lowercase hex digits and a NUL into out (2n + 1 bytes). */
void fm_hex_encode(char *out, const void *p, size_t n);

/* Read exactly 2n lowercase hex digits of s into out[0..n). 0, or -1 (another length, or a
 * character that is not 0-9a-f; out is then unspecified). */
int fm_hex_decode(uint8_t *out, const char *s, size_t n);

#endif
