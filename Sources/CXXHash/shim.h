#ifndef PEFTPACK_CXXHASH_SHIM_H
#define PEFTPACK_CXXHASH_SHIM_H
#include <xxhash.h>
/* Debian's libxxhash dispatches to AVX2 only through the _dispatch entry points. */
#include <xxh_x86dispatch.h>
#endif
