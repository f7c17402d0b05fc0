#ifndef PEFTPACK_CDTYPEKERNELS_H
#define PEFTPACK_CDTYPEKERNELS_H
#include <stddef.h>
#include <stdint.h>
/* Placeholder header; the kernels are filled in by the dtype-conversion work. */
#endif
