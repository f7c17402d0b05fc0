#ifndef PEFTPACK_COPENBLAS_SHIM_H
#define PEFTPACK_COPENBLAS_SHIM_H
#include <cblas.h>
#include <lapacke.h>

/* OpenBLAS's pthreads build starts its worker threads when the library is loaded, and an idle
   worker spins in sched_yield (by default 2^28 cycles before it sleeps). It exports the shutdown
   its own fork handler uses; any later call that needs more than one thread starts the pool
   again. Declared weak so that OpenBLAS builds without a thread server still link: there is then
   nothing to stop. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

static inline void peftpack_openblas_stop_thread_pool(void) {
    if (blas_thread_shutdown_) blas_thread_shutdown_();
}
#endif
