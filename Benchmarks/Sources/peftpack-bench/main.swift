import Foundation
import PeftPack

/// Measures one operation on one file, best of N runs, and prints a JSON line:
///   peftpack-bench read FILE          mmap + touch every tensor byte (XXH3 over each tensor)
///   peftpack-bench convert FILE       every BF16/F16 tensor widened to fp32
///   peftpack-bench pack FILE OUT      every tensor of a safetensors file into a pack
///   peftpack-bench unpack PACK        every tensor of a pack decoded
///   peftpack-bench open PACK          what `inspect` reads: preamble, header, index and adapter
///                                     document, in this process (bytes = the header's stored size)
///   peftpack-bench merge-floor PACK BASE_DIR
///                                     the physical floor of merging PACK into BASE_DIR: base bytes
///                                     in + out at measured memcpy bandwidth, plus the low-rank FLOPs
///                                     at measured sgemm speed on the same shapes (all cores)
///   peftpack-bench extract-floor BASE_DIR RANK OVERSAMPLE POWER_ITERATIONS
///                                     the floor of a randomized-SVD extraction from BASE_DIR and a
///                                     fine-tune of it: both read at memcpy bandwidth, plus the
///                                     sketch FLOPs ((4 + 4q)·m·n·l per 2-D non-embedding weight)
///                                     at measured sgemm speed with k = l (OpenBLAS on all cores);
///                                     with EXTRACTED_PACK (extract's output) as a 6th argument the
///                                     FLOPs count only the matrices extract found changed (its
///                                     modules), which is the work when a fine-tune changes a few
///   peftpack-bench stack-floor RANK PACK…
///                                     the FLOPs of `stack --rank RANK` over PACKs' LoRA modules
///                                     (thin QRs of the stacked B and Aᵀ, the k×k core product and
///                                     its SVD, the two products back to full size) at the sgemm
///                                     speed of stack's own thin shapes on all cores; the bytes to
///                                     read are the packs' sizes, left to the caller's disk speed
///   peftpack-bench dequantize FILE    every tensor of a GGUF file dequantized to fp32 into one
///                                     warm buffer, one thread (bytes = stored bytes; elements_per_s)
func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func best(_ runs: Int, _ body: () throws -> Void) rethrows -> Double {
    var result = Double.infinity
    for _ in 0..<runs { result = min(result, try seconds(body)) }
    return result
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: peftpack-bench read|convert|pack|unpack FILE [OUT]\n".utf8))
    exit(2)
}
let operation = arguments[1], path = arguments[2]
let runs = Int(ProcessInfo.processInfo.environment["BENCH_RUNS"] ?? "3") ?? 3
var bytes = 0
var checksum: UInt64 = 0
var time = 0.0

switch operation {
case "read":
    time = try best(runs) {
        let file = try Checkpoint(path: path)
        bytes = 0
        for name in file.names {
            try file.withBytes(name) { raw in
                checksum ^= XXH3.hash64(raw)
                bytes += raw.count
            }
        }
    }
case "convert":
    let file = try Checkpoint(path: path)
    let names = file.names.filter { [.bf16, .f16].contains(file.info($0)!.dtype) }
    var output = [Float]()
    time = try best(runs) {
        bytes = 0
        for name in names {
            let info = file.info(name)!
            let count = info.elementCount!
            if output.count < count { output = [Float](repeating: 0, count: count) }
            try file.withBytes(name) { raw in
                output.withUnsafeMutableBufferPointer { DTypeConversion.toFloat32(raw, dtype: info.dtype, into: UnsafeMutableBufferPointer(rebasing: $0[0..<count])) }
            }
            bytes += count * info.dtype.byteSize
        }
    }
case "pack":
    let output = arguments[3]
    let level = Int32(ProcessInfo.processInfo.environment["BENCH_LEVEL"] ?? "3") ?? 3
    time = try best(runs) {
        let file = try Checkpoint(path: path)
        let threads = Int(ProcessInfo.processInfo.environment["BENCH_THREADS"] ?? "") ?? ProcessInfo.processInfo.activeProcessorCount
        let writer = try PackWriter(destination: output, options: .init(level: level, threads: threads))
        bytes = 0
        for name in file.names {
            let info = file.info(name)!
            try file.withBytes(name) { try writer.append(name: name, dtype: info.dtype, shape: info.shape, bytes: $0) }
            bytes += info.byteCount!
        }
        try writer.finish(document: StrictJSON.encoding(PackDocument()))
    }
    let stored = try FileManager.default.attributesOfItem(atPath: output)[.size] as! Int
    print("{\"operation\":\"pack\",\"bytes\":\(bytes),\"stored\":\(stored),\"seconds\":\(time),\"gb_per_s\":\(Double(bytes) / time / 1e9)}")
    exit(0)
case "unpack":
    time = try best(runs) {
        let reader = try PackReader(path: path)
        bytes = 0
        for entry in reader.tensors {
            let tensor = try reader.readTensor(entry.name)
            bytes += tensor.bytes.count
        }
    }
case "open":
    time = try best(runs) {
        let reader = try PackReader(path: path)
        _ = try reader.adapterDocument()
        bytes = reader.storedHeaderBytes
    }
case "merge-floor":
    let reader = try PackReader(path: path)
    let base = try Checkpoint(path: arguments[3])
    let modelBytes = base.infos.reduce(0) { $0 + ($1.byteCount ?? 0) }
    let packShapes = Dictionary(reader.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
    var flops = 0.0
    var shapes: [(rows: Int, columns: Int, rank: Int)] = []
    var targetedBytes = 0  // the base weights the adapters change (what `import --base` hashes)
    for adapter in try reader.adapterDocument().adapters {
        for module in adapter.modules {
            targetedBytes += base.info(module.target + ".weight")?.byteCount ?? 0
            guard let aName = module.tensors[TensorRole.loraA], let bName = module.tensors[TensorRole.loraB],
                  let a = packShapes[aName], let b = packShapes[bName] else { continue }
            let moduleFlops: Double = 2 * Double(a[0] * a[1] * b[0])
            flops += moduleFlops
            shapes.append((b[0], a[1], a[0]))
        }
    }
    // memcpy bandwidth: 256 MiB buffer to buffer, both warm, best of runs.
    let size = 256 << 20
    let source = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    let target = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    memset(source, 1, size); memset(target, 2, size)
    let copyTime = best(max(runs, 3)) { target.copyMemory(from: source, byteCount: size) }
    let copyRate = Double(size) / copyTime
    // sgemm on the adapter's own shapes, a cache-sized block of rows at a time per core.
    let cores = ProcessInfo.processInfo.activeProcessorCount
    BLAS.threadCount = 1
    let sample = shapes.max { $0.rows * $0.columns < $1.rows * $1.columns }!
    let blockRows = max(1, (1 << 18) / sample.columns)
    let a = [Float](repeating: 0.01, count: sample.rank * sample.columns), b = [Float](repeating: 0.02, count: sample.rows * sample.rank)
    let gemmTime = best(max(runs, 3)) {
        DispatchQueue.concurrentPerform(iterations: cores) { worker in
            var c = [Float](repeating: 0, count: blockRows * sample.columns)
            var row = worker * sample.rows / cores
            while row < (worker + 1) * sample.rows / cores {
                let count = min(blockRows, (worker + 1) * sample.rows / cores - row)
                a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(transposeA: false, transposeB: false, m: count, n: sample.columns, k: sample.rank, alpha: 1,
                              a: pb.baseAddress! + row * sample.rank, lda: sample.rank, b: pa.baseAddress!, ldb: sample.columns,
                              beta: 0, c: pc.baseAddress!, ldc: sample.columns)
                } } }
                row += count
            }
        }
    }
    let gemmRate = 2 * Double(sample.rows * sample.columns * sample.rank) / gemmTime
    let floor = 2 * Double(modelBytes) / copyRate + flops / gemmRate
    print("{\"operation\":\"merge-floor\",\"bytes_in\":\(modelBytes),\"bytes_out\":\(modelBytes),\"targeted_bytes\":\(targetedBytes),\"memcpy_gb_per_s\":\(copyRate / 1e9),\"flops\":\(flops),\"sgemm_gflops\":\(gemmRate / 1e9),\"floor_seconds\":\(floor)}")
    exit(0)
case "extract-floor":
    let base = try Checkpoint(path: path)
    let rank = Int(arguments[3])!, oversample = Int(arguments[4])!, powerIterations = Int(arguments[5])!
    let width = rank + oversample
    var flops = 0.0
    var largest = (rows: 1, cols: 1)
    var matrices: [(rows: Int, cols: Int)] = []
    if arguments.count > 6 {
        // The changed matrices, as extract found them: each output module's B is m×r and A r×n.
        let reader = try PackReader(path: arguments[6])
        let shapes = Dictionary(reader.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
        for adapter in try reader.adapterDocument().adapters {
            for module in adapter.modules {
                guard let aName = module.tensors[TensorRole.loraA], let bName = module.tensors[TensorRole.loraB],
                      let a = shapes[aName], let b = shapes[bName] else { continue }
                matrices.append((b[0], a[1]))
            }
        }
    } else {
        for info in base.infos where info.shape.count == 2 && !info.name.contains("embed") && !info.name.contains("lm_head") {
            matrices.append((info.shape[0], info.shape[1]))
        }
    }
    for matrix in matrices {
        let factor: Double = Double(4 + 4 * powerIterations)
        flops += factor * Double(matrix.rows * matrix.cols * min(width, min(matrix.rows, matrix.cols)))
        if matrix.rows * matrix.cols > largest.rows * largest.cols { largest = matrix }
    }
    let bytes = 2 * base.infos.reduce(0) { $0 + ($1.byteCount ?? 0) }
    let size = 256 << 20
    let source = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    let target = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    memset(source, 1, size); memset(target, 2, size)
    let copyRate = Double(size) / best(max(runs, 3)) {
        target.copyMemory(from: source, byteCount: size)
        checksum ^= XXH3.hash64(UnsafeRawBufferPointer(start: target, count: 64))  // keeps the copy from being elided
    }
    let matrix = Matrix(rows: largest.rows, cols: largest.cols, values: [Float](repeating: 0.01, count: largest.rows * largest.cols))
    let sketch = Matrix(rows: largest.cols, cols: width, values: [Float](repeating: 0.02, count: largest.cols * width))
    let gemmTime = best(max(runs, 3)) { _ = BLAS.gemm(matrix, sketch) }
    let gemmRate = 2 * Double(largest.rows * largest.cols * width) / gemmTime
    let floor = Double(bytes) / copyRate + flops / gemmRate
    print("{\"operation\":\"extract-floor\",\"matrices\":\(matrices.count),\"bytes\":\(bytes),\"memcpy_gb_per_s\":\(copyRate / 1e9),\"flops\":\(flops),\"sgemm_gflops\":\(gemmRate / 1e9),\"floor_seconds\":\(floor)}")
    exit(0)
case "stack-floor":
    let rank = Int(path)!
    // Per target: k = the stacked rank (Σ of the inputs' ranks), out × in = m × n.
    var targets: [String: (m: Int, n: Int, k: Int)] = [:]
    for packPath in arguments.dropFirst(3) {
        let reader = try PackReader(path: packPath)
        let shapes = Dictionary(reader.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
        for adapter in try reader.adapterDocument().adapters {
            for module in adapter.modules {
                guard let aName = module.tensors[TensorRole.loraA], let bName = module.tensors[TensorRole.loraB],
                      let a = shapes[aName], let b = shapes[bName] else { continue }
                let previous = targets[module.target]?.k ?? 0
                targets[module.target] = (b[0], a[1], previous + a[0])
            }
        }
    }
    // Householder QR with Q formed (sgeqrf + sorgqr) of a p×k matrix: 2k²(p − k/3) each, so
    // 4k²(p − k/3); the k×k core R_B·R_Aᵀ: 2k³; its SVD with U and Vᵀ: 21k³ (Golub & Van Loan's
    // count for square matrices); Q_B·U_R and V_Rᵀ·Q_Aᵀ: 2·(m + n)·k·R.
    var flops = 0.0
    var sample = (m: 1, n: 1, k: 1, r: 1)
    for (_, t) in targets {
        let (m, n, k) = (Double(t.m), Double(t.n), Double(t.k))
        let r = Double(min(rank, t.k))
        flops += 4 * k * k * (m - k / 3) + 4 * k * k * (n - k / 3) + 2 * k * k * k + 21 * k * k * k + 2 * (m + n) * k * r
        if t.m > sample.m { sample = (t.m, t.n, t.k, min(rank, t.k)) }
    }
    // sgemm on stack's own thin shape (m × k)·(k × R) of the tallest module, one single-threaded
    // product per core at once (stack itself runs OpenBLAS single-threaded).
    let cores = ProcessInfo.processInfo.activeProcessorCount
    BLAS.threadCount = 1
    let q = Matrix(rows: sample.m, cols: sample.k, values: [Float](repeating: 0.01, count: sample.m * sample.k))
    let left = Matrix(rows: sample.k, cols: sample.r, values: [Float](repeating: 0.02, count: sample.k * sample.r))
    let repeats = 16
    let gemmTime = best(max(runs, 3)) {
        DispatchQueue.concurrentPerform(iterations: cores) { _ in
            for _ in 0..<repeats { _ = BLAS.gemm(q, left) }
        }
    }
    let gemmRate = Double(cores * repeats) * 2 * Double(sample.m * sample.k * sample.r) / gemmTime
    print("{\"operation\":\"stack-floor\",\"modules\":\(targets.count),\"flops\":\(flops),\"sgemm_gflops\":\(gemmRate / 1e9),\"compute_seconds\":\(flops / gemmRate)}")
    exit(0)
case "dequantize":
    let file = try GGUF.File(path: path)
    var elements = 0
    // One output buffer, touched before timing, so page faults are not counted as dequantization.
    var output = [Float](repeating: 0, count: file.tensors.map { Shape.elementCount($0.shape)! }.max() ?? 0)
    time = best(runs) {
        bytes = 0
        elements = 0
        for entry in file.tensors {
            let count = Shape.elementCount(entry.shape)!
            output.withUnsafeMutableBufferPointer { file.dequantize(entry, into: UnsafeMutableBufferPointer(rebasing: $0[0..<count])) }
            checksum ^= UInt64(output[count / 2].bitPattern)  // keeps the work from being elided
            bytes += entry.byteCount
            elements += count
        }
    }
    print("{\"operation\":\"dequantize\",\"bytes\":\(bytes),\"elements\":\(elements),\"seconds\":\(time),\"gb_per_s\":\(Double(bytes) / time / 1e9),\"elements_per_s\":\(Double(elements) / time),\"checksum\":\(checksum)}")
    exit(0)
default:
    FileHandle.standardError.write(Data("unknown operation \(operation)\n".utf8))
    exit(2)
}
print("{\"operation\":\"\(operation)\",\"bytes\":\(bytes),\"seconds\":\(time),\"gb_per_s\":\(Double(bytes) / time / 1e9)}")
