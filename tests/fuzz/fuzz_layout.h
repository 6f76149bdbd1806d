/* fuzz_layout: the small fixed layout the wire target checks every MODEL/UPDATE against
 * (besides the layout the message names), and that the encoded seeds of gen_corpus.c use
 * (header-only, tests/fuzz only): a spec model of two tensors, "enc.w" [4, 600] (2,400
 * entries: two blocks of the codec's reader) and "enc.b" [5], small enough that mutated
 * encoded frames stay cheap. Its model name is its fingerprint ("spec-..."). */
#ifndef FUZZ_LAYOUT_H
#define FUZZ_LAYOUT_H

#include "fm_model.h"

/* The layout, or NULL with *err set (the caller aborts: a broken harness). Caller owns it. */
static inline fm_model_t *fuzz_small_layout(int *err)
{
    static const fm_spec_tensor_t t[] = {{"enc.w", 2, {4, 600}}, {"enc.b", 1, {5}}};
    return fm_model_new_spec(t, 2, err);
}

#endif
