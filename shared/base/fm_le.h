/* fm_le: little-endian integers and doubles in byte buffers, for the durable and wire formats
 * that fix their byte order (checkpoints, the privacy blobs, the DP-SGD accounts file, the
 * secure-aggregation messages). Header only; byte by byte, so any alignment and any host
 * order work. A double travels as its IEEE 754 bits. No errors: the caller owns the room. */
#ifndef FM_LE_H
#define FM_LE_H

#include <stdint.h>
#include <string.h>

static inline void fm_le_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void fm_le_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t fm_le_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t fm_le_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void fm_le_put_f64(uint8_t *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    fm_le_put64(p, v);
}

static inline double fm_le_get_f64(const uint8_t *p)
{
    uint64_t v = fm_le_get64(p);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

#endif
