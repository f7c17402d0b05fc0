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
/* LAPACK's compact-WY QR and LQ (sgeqrt/sgemqrt, sgelqt/sgemlqt), called directly in column-major:
   LAPACKE has no sgelqt, and its row-major wrappers copy every matrix to column-major and back
   (18.5 % of a 2B `stack --rank 32`). gfortran passes each CHARACTER argument's length after the
   others. */
extern void sgeqrt_(const int *m, const int *n, const int *nb, float *a, const int *lda, float *t, const int *ldt,
                    float *work, int *info);
extern void sgemqrt_(const char *side, const char *trans, const int *m, const int *n, const int *k, const int *nb,
                     const float *v, const int *ldv, const float *t, const int *ldt, float *c, const int *ldc,
                     float *work, int *info, size_t side_length, size_t trans_length);
extern void sgelqt_(const int *m, const int *n, const int *mb, float *a, const int *lda, float *t, const int *ldt,
                    float *work, int *info);
extern void sgemlqt_(const char *side, const char *trans, const int *m, const int *n, const int *k, const int *mb,
                     const float *v, const int *ldv, const float *t, const int *ldt, float *c, const int *ldc,
                     float *work, int *info, size_t side_length, size_t trans_length);

static inline int peftpack_sgeqrt(int m, int n, int nb, float *a, int lda, float *t, int ldt, float *work) {
    int info = 0;
    sgeqrt_(&m, &n, &nb, a, &lda, t, &ldt, work, &info);
    return info;
}

/* C ← Q·C with Q from peftpack_sgeqrt (side L, no transpose). */
static inline int peftpack_sgemqrt_left(int m, int n, int k, int nb, const float *v, int ldv, const float *t, int ldt,
                                        float *c, int ldc, float *work) {
    int info = 0;
    sgemqrt_("L", "N", &m, &n, &k, &nb, v, &ldv, t, &ldt, c, &ldc, work, &info, 1, 1);
    return info;
}

static inline int peftpack_sgelqt(int m, int n, int mb, float *a, int lda, float *t, int ldt, float *work) {
    int info = 0;
    sgelqt_(&m, &n, &mb, a, &lda, t, &ldt, work, &info);
    return info;
}

/* C ← C·Q with Q from peftpack_sgelqt (side R, no transpose). */
static inline int peftpack_sgemlqt_right(int m, int n, int k, int mb, const float *v, int ldv, const float *t, int ldt,
                                         float *c, int ldc, float *work) {
    int info = 0;
    sgemlqt_("R", "N", &m, &n, &k, &mb, v, &ldv, t, &ldt, c, &ldc, work, &info, 1, 1);
    return info;
}
#endif
