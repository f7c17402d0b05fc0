#ifndef PEFTPACK_COPENBLAS_SHIM_H
#define PEFTPACK_COPENBLAS_SHIM_H
#include <cblas.h>
#include <lapacke.h>
#endif
