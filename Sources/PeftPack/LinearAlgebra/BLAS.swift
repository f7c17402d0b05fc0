import COpenBLAS

/// The one place that calls BLAS (OpenBLAS, CBLAS interface, row-major).
public enum BLAS {
    /// OpenBLAS's own thread count. When parallelism comes from the caller (tensors in
    /// parallel), set 1 so the two levels do not oversubscribe the cores.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set {
            // Setting any count restarts a stopped pool (`stopThreadPool`), so an unchanged
            // count is left alone.
            guard newValue != threadCount else { return }
            openblas_set_num_threads(Int32(newValue))
        }
    }

    /// The threads OpenBLAS had when `stopThreadPool` ran (OPENBLAS_NUM_THREADS and the core
    /// count decide it at load), or its current count if the pool was never stopped.
    public static var availableThreads: Int { stoppedPoolThreads ?? threadCount }
    nonisolated(unsafe) private static var stoppedPoolThreads: Int?

    /// Leaves OpenBLAS single-threaded with no worker threads until `threadCount` is raised.
    /// Its pthreads build starts its worker threads at load, and an idle worker spins in
    /// sched_yield beside the caller: on this project's 2-core VMs that made `verify` of a
    /// fixture model take 42–48 ms on average instead of 27 ms, for matrices OpenBLAS never
    /// splits. Commands call this once at start, before any other thread uses BLAS.
    public static func stopThreadPool() {
        guard stoppedPoolThreads == nil else { return }
        stoppedPoolThreads = threadCount
        // Single-threaded first, while the pool is up: setting the count after the shutdown
        // would start the pool again.
        openblas_set_num_threads(1)
        peftpack_openblas_stop_thread_pool()
    }

    /// Runs `body` with OpenBLAS on `availableThreads` when the work is large enough to repay
    /// its worker threads, and single-threaded otherwise; the previous count is restored.
    public static func withThreads<T>(forFLOPs flops: Double, _ body: () throws -> T) rethrows -> T {
        let previous = threadCount
        threadCount = flops >= parallelFLOPs ? availableThreads : 1
        defer { threadCount = previous }
        return try body()
    }

    /// Below this a whole computation takes a few milliseconds on one core, about what a woken
    /// pool costs in start-up and spinning.
    public static let parallelFLOPs = 2.5e8

    /// C = alpha · op(A) · op(B) + beta · C on raw row-major buffers with leading dimensions.
    public static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// op(A) · op(B) · alpha.
    public static func gemm(_ a: Matrix, _ b: Matrix, transposeA: Bool = false, transposeB: Bool = false, alpha: Float = 1) -> Matrix {
        let m = transposeA ? a.cols : a.rows, k = transposeA ? a.rows : a.cols
        let n = transposeB ? b.rows : b.cols
        precondition(k == (transposeB ? b.cols : b.rows), "gemm inner dimensions disagree")
        var c = Matrix(zeros: m, n)
        a.values.withUnsafeBufferPointer { pa in
            b.values.withUnsafeBufferPointer { pb in
                c.values.withUnsafeMutableBufferPointer { pc in
                    gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                         a: pa.baseAddress!, lda: a.cols, b: pb.baseAddress!, ldb: b.cols, beta: 0, c: pc.baseAddress!, ldc: n)
                }
            }
        }
        return c
    }

    /// C = alpha · op(A) · op(B) + beta · C in fp64 (merging computes deltas exactly enough to
    /// round once to the output dtype).
    public static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                            a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                            beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        cblas_dgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Σ xᵢ² of fp32 values accumulated in fp64 (sdsdot's sibling dsdot).
    public static func squaredNorm(_ x: UnsafeBufferPointer<Float>) -> Double {
        guard let base = x.baseAddress, x.count > 0 else { return 0 }
        var total = 0.0
        var start = 0
        // dsdot takes an Int32 count.
        while start < x.count {
            let count = min(x.count - start, Int(Int32.max))
            total += cblas_dsdot(Int32(count), base + start, 1, base + start, 1)
            start += count
        }
        return total
    }
}
