import Foundation

#if os(Linux)
/// glibc's mallopt (declared in malloc.h, which the Glibc module does not export).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif

/// `peftpack merge`: folds adapters into the base weights, tensor by tensor, streaming. Each
/// changed tensor is computed in fp32 from the base and every adapter in the order given, then
/// rounded once (round to nearest, ties to even) to the output dtype. Untouched tensors are copied
/// byte for byte.
public enum Merge {
    public struct Options {
        public var dtype: DType?
        public var maxShardSize: Int?
        /// Replace an existing output.
        public var force: Bool
        public var skipUnmergeable: Bool
        public var tiedEmbeddings: TiedEmbeddingsPolicy
        public var baseCheck: BaseCheckLevel

        public init(dtype: DType? = nil, maxShardSize: Int? = nil, force: Bool = false, skipUnmergeable: Bool = false,
                    tiedEmbeddings: TiedEmbeddingsPolicy = .untie, baseCheck: BaseCheckLevel = .content) {
            self.dtype = dtype
            self.maxShardSize = maxShardSize
            self.force = force
            self.skipUnmergeable = skipUnmergeable
            self.tiedEmbeddings = tiedEmbeddings
            self.baseCheck = baseCheck
        }
    }

    public struct AdapterReport: Encodable {
        public var pack: String
        public var adapter: String
        public var weight: Double
        /// Elements this adapter's tensors changed in fp32, and how many of them rounding to the
        /// output dtype returned to the base value.
        public var changedElements: Int
        public var lostToRounding: Int
        public var lostShare: Double
    }

    public struct Report: Encodable {
        public var output: String
        public var tensorsTouched: Int
        public var tensorsCopied: Int
        public var bytesRead: Int
        public var bytesWritten: Int
        public var seconds: Double
        public var maxAbsDelta: Double
        public var adapters: [AdapterReport]
        public var skippedAdapters: [String]
        /// Set when the base ties its head to its embedding and the adapters change either.
        public var tiedEmbeddings: TiedEmbeddingsReport?
        public var baseCheck: BaseBinding.Report
        public var files: [String]
    }

    public static func run(base baseFolder: String, inputs: [MergeInput], output: String, options: Options,
                           progress: ((Int, Int) -> Void)? = nil) throws -> Report {
        let start = Date()
        for input in inputs { try FiniteValues.checkWeight(input.weight, of: input.pack) }
        // Every term of every adapter kind is scaled by its weight (DoRA and IA3 interpolate
        // from W), so all-zero weights give back the base under a merged model's name.
        if !inputs.isEmpty && inputs.allSatisfy({ $0.weight == 0 }) {
            throw UsageError("\(inputs.map(\.pack).joined(separator: ", ")): nothing to merge: every adapter's weight is 0, so the output would be a copy of the base")
        }
        keepLargeAllocationsInHeap()
        // Parallelism comes from splitting each tensor's rows across the cores; OpenBLAS's own
        // threads would only oversubscribe them (and spin in sched_yield).
        let blasThreads = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = blasThreads }
        let base = try BaseModel(folder: baseFolder)
        let binding = BaseBinding(base: base, level: options.baseCheck)
        var readers: [PackReader] = []
        var selected: [(adapter: Adapter, weight: Double)] = []
        var owners: [Int] = []
        for (index, input) in inputs.enumerated() {
            let reader = try PackReader(path: input.pack)
            let document = try reader.adapterDocument()
            let chosen = try input.adapter.map { [try PackExport.chooseAdapter(document, name: $0, file: input.pack)] } ?? document.adapters
            let adapters = chosen.map(base.withModuleLayouts)
            let shapes = Dictionary(reader.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
            let targets = try adapters.flatMap { try base.check($0, shapes: { shapes[$0] }, file: input.pack) }
            try binding.add(document.base, targets: targets, all: document.adapters, shapes: { shapes[$0] }, file: input.pack)
            readers.append(reader)
            for adapter in adapters {
                selected.append((adapter, input.weight))
                owners.append(index)
            }
        }
        var (changes, skipped) = try MergePlanner.plan(adapters: selected, base: base, skipUnmergeable: options.skipUnmergeable,
                                                         file: { inputs[owners[$0]].pack })
        let tied = try TiedMerge.plan(changes: changes, base: base, policy: options.tiedEmbeddings, outputType: options.dtype,
                                      readers: readers, owners: owners, selected: selected)
        if let tied { changes = tied.changes }
        let checkpoint = base.checkpoint
        var outputInfos = checkpoint.infos.map { info -> TensorInfo in
            guard let dtype = options.dtype, info.dtype.isFloatingPoint else { return info }
            return TensorInfo(name: info.name, dtype: dtype, shape: info.shape)
        }
        var shards: [[TensorInfo]]
        if let limit = options.maxShardSize {
            shards = CheckpointWriter.planShards(outputInfos + (tied?.addedHead.map { [$0] } ?? []), maxShardSize: limit)
        } else {
            let byName = Dictionary(uniqueKeysWithValues: outputInfos.map { ($0.name, $0) })
            shards = checkpoint.shardFiles.map { file in checkpoint.names.filter { checkpoint.shardOf($0) == file }.map { byName[$0]! } }
            if let tied, let head = tied.addedHead { shards = TiedMerge.placing(head, after: tied.report.embedding, in: shards) }
        }
        if let head = tied?.addedHead { outputInfos.append(head) }
        var changed = [Int](repeating: 0, count: selected.count)
        var lost = [Int](repeating: 0, count: selected.count)
        var maxAbsDelta = 0.0
        var bytesRead = 0, bytesWritten = 0, done = 0
        let metadata = try checkpoint.infos.first.map { try checkpoint.file(forTensor: $0.name).metadata } ?? nil

        // One output buffer for every merged tensor: fresh tensor-sized allocations would be
        // page-faulted in anew each time.
        let outputBuffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: max(1, outputInfos.filter { changes[$0.name] != nil }.map { $0.byteCount ?? 0 }.max() ?? 0), alignment: 64)
        defer { outputBuffer.deallocate() }
        // Another checkpoint of the same architecture usually differs in the first tensor already:
        // refused before anything is copied, at the cost of one tensor the merge reads next anyway.
        if let first = binding.pendingTensors.first { try binding.checkContent(first) }
        func record(changed changedHere: Int, lost lostHere: Int, largest: Double, adapters: Set<Int>) {
            maxAbsDelta = max(maxAbsDelta, largest)
            for adapter in adapters {
                changed[adapter] += changedHere
                lost[adapter] += lostHere
            }
        }
        func record(_ merged: FoldedTensor) {
            record(changed: merged.changed, lost: merged.lost, largest: merged.largest, adapters: merged.adapters)
        }
        let files = try FolderOutput.write(to: output, force: options.force, protecting: [baseFolder] + inputs.map(\.pack)) { folder in
            try CheckpointWriter.write(folder: folder, shards: shards, metadata: metadata) { info, sink in
                defer {
                    (try? checkpoint.file(forTensor: info.name))?.releasePages(info.name)
                    done += 1
                    progress?(done, outputInfos.count)
                }
                bytesWritten += info.byteCount ?? 0
                if let computed = tied?.outputs[info.name] {
                    bytesRead += checkpoint.info(base.storedName(info.name))?.byteCount ?? 0
                    record(computed)
                    try computed.result.bytes.withUnsafeBytes(sink)
                    return
                }
                let stored = checkpoint.info(info.name)!
                bytesRead += stored.byteCount ?? 0
                try binding.checkContent(info.name)
                guard let change = changes[info.name] else {
                    if stored.dtype == info.dtype {
                        // Window by window: an untouched embedding would otherwise sit in memory whole.
                        try checkpoint.streamBytes(info.name, sink)
                    } else {
                        let original = try checkpoint.tensor(info.name).floats()
                        let converted = HostTensor(floats: original, shape: info.shape, dtype: info.dtype)
                        try FiniteValues.checkMerged(info, madeNonFinite: FiniteValues.newlyNonFinite(converted, base: original.map(Double.init)).total)
                        try converted.bytes.withUnsafeBytes(sink)
                    }
                    return
                }
                if let terms = try lowRankTerms(change, stored: stored, output: info, readers: readers, owners: owners) {
                    let orientation = MergeArithmetic.Orientation(storedShape: stored.shape, layout: terms.layout)
                    let out = UnsafeMutableRawBufferPointer(rebasing: outputBuffer[0..<(info.byteCount ?? 0)])
                    let stats = try checkpoint.withBytes(info.name) { baseBytes in
                        LowRankMerge.merge(base: baseBytes, baseType: stored.dtype, orientation: orientation, terms: terms.terms,
                                           outType: info.dtype, into: out)
                    }
                    try FiniteValues.checkMerged(info, madeNonFinite: stats.nonFinite)
                    record(changed: stats.changed, lost: stats.lost, largest: stats.maxAbsDelta, adapters: terms.adapters)
                    try sink(UnsafeRawBufferPointer(out))
                    return
                }
                let merged = try fold(change.operations, into: checkpoint.tensor(info.name) as HostTensor, stored: stored, output: info,
                                      readers: readers, owners: owners, selected: selected)
                record(merged)
                try merged.result.bytes.withUnsafeBytes(sink)
            }
            try binding.checkRemainingContent()
            try copyOtherFiles(from: baseFolder, to: folder)
            if tied?.untie == true { try TiedMerge.untieConfig(in: folder) }
        }
        let adapterReports = selected.enumerated().map { position, entry in
            AdapterReport(pack: inputs[owners[position]].pack, adapter: entry.adapter.name, weight: entry.weight,
                          changedElements: changed[position], lostToRounding: lost[position],
                          lostShare: changed[position] > 0 ? Double(lost[position]) / Double(changed[position]) : 0)
        }
        return Report(output: output, tensorsTouched: changes.count, tensorsCopied: outputInfos.count - changes.count,
                      bytesRead: bytesRead, bytesWritten: bytesWritten, seconds: Date().timeIntervalSince(start),
                      maxAbsDelta: maxAbsDelta, adapters: adapterReports, skippedAdapters: skipped,
                      tiedEmbeddings: tied?.report, baseCheck: binding.report, files: files)
    }

    /// A merged tensor and what merging it did: elements changed in fp64, how many of them
    /// rounding returned to the base's value, the largest change, and the adapters behind it.
    struct FoldedTensor {
        var result: HostTensor
        var changed: Int
        var lost: Int
        var largest: Double
        var adapters: Set<Int>
    }

    /// The general path: every operation applied in fp64 to the base tensor `original`, in order,
    /// and the result rounded once to the output dtype; refused if that made a finite element
    /// NaN or ±Inf.
    static func fold(_ operations: [(operation: TensorChange.Operation, weight: Double)], into original: HostTensor,
                     stored: TensorInfo, output: TensorInfo, readers: [PackReader], owners: [Int],
                     selected: [(adapter: Adapter, weight: Double)]) throws -> FoldedTensor {
        let base = original.floats().map(Double.init)
        var values = base
        var adapters = Set<Int>()
        for (operation, weight) in operations {
            adapters.insert(try apply(operation, weight: weight, to: &values, stored: stored, readers: readers, owners: owners, selected: selected))
        }
        let result = HostTensor(correctlyRounding: values, shape: output.shape, dtype: output.dtype)
        try FiniteValues.checkMerged(output, madeNonFinite: FiniteValues.newlyNonFinite(result, base: base).total)
        let baseline = original.dtype == output.dtype ? original : HostTensor(correctlyRounding: base, shape: output.shape, dtype: output.dtype)
        let (changed, lost, largest) = roundingLoss(values: values, original: base, merged: result, baseline: baseline)
        return FoldedTensor(result: result, changed: changed, lost: lost, largest: largest, adapters: adapters)
    }

    /// Elements the merge changed in fp64, how many of them rounded back to the base's value in the
    /// output dtype, and the largest change.
    static func roundingLoss(values: [Double], original: [Double], merged: HostTensor, baseline: HostTensor) -> (Int, Int, Double) {
        var changed = 0, lost = 0, largest = 0.0
        merged.bytes.withUnsafeBytes { mergedBytes in
            baseline.bytes.withUnsafeBytes { baseBytes in
                values.withUnsafeBufferPointer { v in
                    original.withUnsafeBufferPointer { o in
                        let size = merged.dtype.byteSize
                        for index in 0..<v.count where v[index] != o[index] {
                            changed += 1
                            largest = max(largest, abs(v[index] - o[index]))
                            let same: Bool
                            switch size {
                            case 2: same = mergedBytes.load(fromByteOffset: 2 * index, as: UInt16.self) == baseBytes.load(fromByteOffset: 2 * index, as: UInt16.self)
                            case 4: same = mergedBytes.load(fromByteOffset: 4 * index, as: UInt32.self) == baseBytes.load(fromByteOffset: 4 * index, as: UInt32.self)
                            default: same = mergedBytes.load(fromByteOffset: 8 * index, as: UInt64.self) == baseBytes.load(fromByteOffset: 8 * index, as: UInt64.self)
                            }
                            if same { lost += 1 }
                        }
                    }
                }
            }
        }
        return (changed, lost, largest)
    }

    /// The low-rank terms of a change that only LoRA/rsLoRA modules make to a 2-D weight in a
    /// float dtype (the fused fast path), or nil when the change needs the general path.
    static func lowRankTerms(_ change: TensorChange, stored: TensorInfo, output: TensorInfo, readers: [PackReader],
                             owners: [Int]) throws -> (terms: [LowRankMerge.Term], adapters: Set<Int>, layout: WeightLayout?)? {
        guard LowRankMerge.supports(storedShape: stored.shape, baseType: stored.dtype, outType: output.dtype) else { return nil }
        var terms: [LowRankMerge.Term] = []
        var adapters = Set<Int>()
        var layout: WeightLayout??
        for (operation, weight) in change.operations {
            guard case .lowRank(let module, let adapter) = operation else { return nil }
            if let layout, layout != module.layout { return nil }
            layout = module.layout
            let orientation = MergeArithmetic.Orientation(storedShape: stored.shape, layout: module.layout)
            let reader = readers[owners[adapter]]
            let a = try reader.readTensor(module.tensors[TensorRole.loraA]!).floats().map(Double.init)
            let b = try reader.readTensor(module.tensors[TensorRole.loraB]!).floats().map(Double.init)
            let rank = a.count / max(orientation.inputs, 1)
            guard a.count == rank * orientation.inputs, b.count == orientation.out * rank else {
                throw InputError(file: reader.path, problem: "adapter factors of \(module.target) (\(a.count) and \(b.count) elements) do not fit its \(Shape.describe(stored.shape)) weight")
            }
            terms.append(LowRankMerge.Term(a: a, b: b, rank: rank, alpha: (module.scale ?? 1) * weight))
            adapters.insert(adapter)
        }
        return (terms, adapters, layout ?? nil)
    }

    /// Applies one operation; returns the index of the adapter it belongs to.
    static func apply(_ operation: TensorChange.Operation, weight: Double, to values: inout [Double], stored: TensorInfo,
                      readers: [PackReader], owners: [Int], selected: [(adapter: Adapter, weight: Double)]) throws -> Int {
        func floats(_ adapter: Int, _ name: String) throws -> [Double] {
            try readers[owners[adapter]].readTensor(name).floats().map(Double.init)
        }
        switch operation {
        case .lowRank(let module, let adapter), .dora(let module, let adapter):
            let orientation = MergeArithmetic.Orientation(storedShape: stored.shape, layout: module.layout)
            let a = try floats(adapter, module.tensors[TensorRole.loraA]!), b = try floats(adapter, module.tensors[TensorRole.loraB]!)
            let rank = module.rank ?? a.count / max(orientation.inputs, 1)
            if let magnitude = module.tensors[TensorRole.magnitude] {
                MergeArithmetic.applyDoRA(&values, orientation: orientation, a: a, b: b, rank: rank, scale: module.scale ?? 1,
                                          magnitude: try floats(adapter, magnitude), weight: weight)
            } else {
                MergeArithmetic.addLowRank(&values, orientation: orientation, a: a, b: b, rank: rank, alpha: (module.scale ?? 1) * weight)
            }
            return adapter
        case .ia3(let module, let adapter):
            let vector = try floats(adapter, module.tensors[TensorRole.ia3Vector]!)
            let orientation = stored.shape.count == 2 ? MergeArithmetic.Orientation(storedShape: stored.shape, layout: module.layout) : nil
            MergeArithmetic.applyIA3(&values, orientation: orientation, vector: vector, side: module.side ?? .output, weight: weight)
            return adapter
        case .replace(let tensor, let adapter):
            let replacement = try floats(adapter, tensor)
            if weight == 1 {
                values = replacement
            } else {
                for index in values.indices { values[index] += weight * (replacement[index] - values[index]) }
            }
            return adapter
        case .replaceRows(let tensor, let rows, let adapter):
            let replacement = try floats(adapter, tensor)
            let width = stored.shape.count == 2 ? stored.shape[1] : 0
            guard width > 0, replacement.count == rows.count * width, rows.allSatisfy({ $0 >= 0 && $0 < stored.shape[0] }) else {
                throw InputError(file: readers[owners[adapter]].path, problem: "the rows replacing \(stored.name) (\(rows.count) of them, \(replacement.count) values) do not fit its \(Shape.describe(stored.shape)) shape")
            }
            // Weight w moves each replaced row w of the way to its new value, as for whole tensors.
            for (position, row) in rows.enumerated() {
                for column in 0..<width {
                    let index = row * width + column, new = replacement[position * width + column]
                    values[index] = weight == 1 ? new : values[index] + weight * (new - values[index])
                }
            }
            return adapter
        case .delta(let tensor, let adapter):
            MergeArithmetic.add(&values, try floats(adapter, tensor), scale: weight)
            return adapter
        case .addBias(let tensor, let scale, let adapter):
            MergeArithmetic.add(&values, try floats(adapter, tensor), scale: scale * weight)
            return adapter
        }
    }

    /// Merging allocates tensor-sized buffers over and over. glibc serves such sizes with fresh
    /// mmaps and unmaps them on free, so every tensor page-faults its buffers in anew (most of the
    /// run's time went to the kernel). Keeping them in the heap lets the next tensor reuse them.
    static func keepLargeAllocationsInHeap() {
        #if os(Linux)
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 1 << 30)
        _ = glibcMallopt(-1 /* M_TRIM_THRESHOLD */, Int32.max)
        #endif
    }

    /// Everything in the base folder but its weights (config, tokenizer, generation config…).
    static func copyOtherFiles(from base: String, to folder: String) throws {
        let fileManager = FileManager.default
        for name in try fileManager.contentsOfDirectory(atPath: base)
        where !name.hasSuffix(".safetensors") && name != Checkpoint.indexFileName && !name.hasPrefix(".") {
            let destination = (folder as NSString).appendingPathComponent(name)
            do {
                try fileManager.copyItem(atPath: (base as NSString).appendingPathComponent(name), toPath: destination)
            } catch let error as CocoaError {
                throw FileAccessError.ioFailed(path: destination, operation: "copy", reason: systemErrorText(of: error))
            }
        }
    }
}
