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
        /// A bitsandbytes base stays quantized: merged weights are requantized as bnb does when PEFT
        /// merges into a quantized layer (QuantizedOutput). Ignored for an unquantized base.
        public var keepsQuantization: Bool
        /// Merged tensors requantized to this type: a ggml type (q8_0, q4_k…) for a GGUF base, or
        /// the bitsandbytes type (nf4, fp4, int8) the base already has.
        public var quantizedType: String?
        /// Modules whose requantized change keeps less than this share of ΔW
        /// (QuantizationSurvival.survival) are named in the report, and promoted if asked.
        public var minSurvival: Double
        public var promotion: Promotion?
        /// What a GGUF base's merged tensors are written as, derived from the above by `run`.
        var ggufPrecision = GGUFPrecision.automatic

        public init(dtype: DType? = nil, maxShardSize: Int? = nil, force: Bool = false, skipUnmergeable: Bool = false,
                    tiedEmbeddings: TiedEmbeddingsPolicy = .untie, baseCheck: BaseCheckLevel = .content,
                    keepsQuantization: Bool = false, quantizedType: String? = nil, minSurvival: Double = 0.5,
                    promotion: Promotion? = nil) {
            self.dtype = dtype
            self.quantizedType = quantizedType
            self.minSurvival = minSurvival
            self.promotion = promotion
            self.keepsQuantization = keepsQuantization
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
        /// Per merged quantized weight when the base stays quantized (nil otherwise).
        public var requantized: [QuantizationSurvival]?
        /// The requantized weights whose survival is below `minSurvival` (promoted or not).
        public var belowMinSurvival: [String]?
        public var minSurvival: Double?
    }

    /// Plan (adapters chosen and checked, every tensor's operations) → compute and write (tensor
    /// by tensor, streaming, into a folder that appears whole).
    public static func run(base baseFolder: String, inputs: [MergeInput], output: String, options: Options,
                           progress: ((Int, Int) -> Void)? = nil) throws -> Report {
        let start = Date()
        let selection = try SelectedAdapters(inputs, allZeroWeights: "nothing to merge: every adapter's weight is 0, so the output would be a copy of the base")
        keepLargeAllocationsInHeap()
        // Parallelism comes from splitting each tensor's rows across the cores; OpenBLAS's own
        // threads would only oversubscribe them (and spin in sched_yield).
        let blasThreads = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = blasThreads }
        let base = try BaseModel(folder: baseFolder)
        if let model = base.checkpoint.decoded as? GGUFBaseModel {
            return try mergeGGUF(model, base: base, selection: selection, output: output, options: options, start: start,
                                 protecting: [baseFolder] + inputs.map(\.pack), progress: progress)
        }
        if let weights = base.checkpoint.decoded as? MLXQuantizedWeights, options.keepsQuantization || options.quantizedType != nil {
            return try mergeMLXQuantized(weights, base: base, selection: selection, output: output, options: options, start: start,
                                         protecting: [baseFolder] + inputs.map(\.pack))
        }
        var options = options
        if let type = options.quantizedType {
            guard let layout = base.checkpoint.dequantizer, layout.quantTypeNames == [type] else {
                let has = base.checkpoint.dequantizer.map { "stores \($0.quantTypeNames.sorted().joined(separator: " and ")) weights" } ?? "is not quantized"
                throw InputError(file: baseFolder, problem: "\(has): merged weights can be requantized to \(type) only on a base that stores \(type) weights, as merging keeps a bitsandbytes base's own quantization (a ggml type needs a GGUF base)")
            }
            options.keepsQuantization = true
        }
        if let promotion = options.promotion, options.keepsQuantization, base.checkpoint.dequantizer != nil {
            try QuantizedOutput.check(promotion, base: base)
        }
        let plan = try Plan(base: base, selection: selection, options: options)
        let stream = TensorStream(plan, progress: progress)
        var survival: [QuantizationSurvival]?
        var quantizedBytes: Int?
        let files = try FolderOutput.write(to: output, force: options.force, protecting: [baseFolder] + inputs.map(\.pack)) { folder in
            if plan.keepsQuantization {
                (quantizedBytes, survival) = try QuantizedOutput.write(stream, plan: plan, options: options, baseFolder: baseFolder, into: folder)
            } else {
                try stream.write(into: folder, baseFolder: baseFolder)
            }
        }
        return Report(output: output, tensorsTouched: plan.changes.count, tensorsCopied: plan.outputInfos.count - plan.changes.count,
                      bytesRead: stream.bytesRead, bytesWritten: quantizedBytes ?? stream.bytesWritten, seconds: Date().timeIntervalSince(start),
                      maxAbsDelta: stream.maxAbsDelta, adapters: stream.adapterReports, skippedAdapters: plan.skipped,
                      tiedEmbeddings: plan.tied?.report, baseCheck: plan.binding.report, files: files, requantized: survival,
                      belowMinSurvival: survival.map { below(options.minSurvival, $0) }, minSurvival: survival.map { _ in options.minSurvival })
    }

    static func below(_ minimum: Double, _ survival: [QuantizationSurvival]) -> [String] {
        survival.filter { $0.survival < minimum }.map(\.tensor)
    }

    /// A GGUF base: the output is one GGUF file (GGUFOutput), its merged tensors in the precision
    /// the options give (a float dtype, the base's own types, or one ggml type).
    private static func mergeGGUF(_ model: GGUFBaseModel, base: BaseModel, selection: SelectedAdapters, output: String, options given: Options,
                                  start: Date, protecting inputs: [String], progress: ((Int, Int) -> Void)?) throws -> Report {
        var options = given
        if let name = options.quantizedType {
            guard let type = GGUF.ElementType.writable.first(where: { $0.ggmlName.lowercased() == name.lowercased() }) else {
                throw InputError(file: model.path, problem: "is a GGUF model: \(name) is not a ggml type peftpack writes (it writes \(GGUF.ElementType.writable.map(\.ggmlName).joined(separator: ", ")))")
            }
            options.ggufPrecision = .fixed(type)
        } else if options.keepsQuantization {
            options.ggufPrecision = .same
        } else if let dtype = options.dtype {
            options.ggufPrecision = .fixed(dtype == .f32 ? .f32 : dtype == .f16 ? .f16 : .bf16)
        }
        // Tied outputs are computed in fp32 and rounded or quantized from there.
        options.dtype = .f32
        options.keepsQuantization = false
        let plan = try Plan(base: base, selection: selection, options: options)
        let written = try GGUFOutput.write(plan: plan, model: model, output: output, options: options, protecting: inputs, progress: progress)
        let survival = written.survival.isEmpty ? nil : written.survival
        return Report(output: output, tensorsTouched: plan.changes.count, tensorsCopied: model.names.count - plan.changes.count,
                      bytesRead: model.storedBytes, bytesWritten: written.bytesWritten, seconds: Date().timeIntervalSince(start),
                      maxAbsDelta: written.maxAbsDelta, adapters: written.adapterReports(plan), skippedAdapters: plan.skipped,
                      tiedEmbeddings: plan.tied?.report, baseCheck: plan.binding.report, files: [(output as NSString).lastPathComponent],
                      requantized: survival, belowMinSurvival: survival.map { below(options.minSurvival, $0) },
                      minSurvival: survival.map { _ in options.minSurvival })
    }

    /// An MLX-quantized base kept quantized (MLXQuantizedOutput): each merged weight requantized
    /// with its layer's own group size and bits.
    private static func mergeMLXQuantized(_ weights: MLXQuantizedWeights, base: BaseModel, selection: SelectedAdapters, output: String,
                                          options given: Options, start: Date, protecting inputs: [String]) throws -> Report {
        let folder = base.checkpoint.folder
        if let type = given.quantizedType {
            throw InputError(file: folder, problem: "is an MLX-quantized model: its merged weights are requantized with each layer's own group size and bits, not as \(type)")
        }
        if let promotion = given.promotion { try MLXQuantizedOutput.check(promotion, base: folder) }
        var options = given
        // The requantized weights are quantized from the fp32 merge, as mx.quantize of an fp32 array.
        options.dtype = .f32
        options.keepsQuantization = false
        let plan = try Plan(base: base, selection: selection, options: options)
        var written: GGUFOutput.Result?
        let files = try FolderOutput.write(to: output, force: options.force, protecting: inputs) { into in
            written = try MLXQuantizedOutput.write(plan: plan, weights: weights, options: options, baseFolder: folder, into: into)
        }
        let result = written!
        let survival = result.survival.isEmpty ? nil : result.survival
        return Report(output: output, tensorsTouched: plan.changes.count, tensorsCopied: weights.names.count - plan.changes.count,
                      bytesRead: weights.storedBytes, bytesWritten: result.bytesWritten, seconds: Date().timeIntervalSince(start),
                      maxAbsDelta: result.maxAbsDelta, adapters: result.adapterReports(plan), skippedAdapters: plan.skipped,
                      tiedEmbeddings: plan.tied?.report, baseCheck: plan.binding.report, files: files, requantized: survival,
                      belowMinSurvival: survival.map { below(options.minSurvival, $0) }, minSurvival: survival.map { _ in options.minSurvival })
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
                             owners: [Int]) throws -> (terms: [LowRankMerge.Term], adapters: Set<Int>, layout: WeightLayout)? {
        guard LowRankMerge.supports(storedShape: stored.shape, baseType: stored.dtype, outType: output.dtype) else { return nil }
        var terms: [LowRankMerge.Term] = []
        var adapters = Set<Int>()
        var layout: WeightLayout?
        for (operation, weight) in change.operations {
            guard case .lowRank(let module, let settings, let adapter) = operation else { return nil }
            if let layout, layout != settings.layout { return nil }
            layout = settings.layout
            let orientation = WeightOrientation(storedShape: stored.shape, layout: settings.layout)
            let reader = readers[owners[adapter]]
            let a = try reader.readTensor(module.tensors[TensorRole.loraA]!).floats().map(Double.init)
            let b = try reader.readTensor(module.tensors[TensorRole.loraB]!).floats().map(Double.init)
            let rank = a.count / max(orientation.inputs, 1)
            guard a.count == rank * orientation.inputs, b.count == orientation.out * rank else {
                throw InputError(file: reader.path, problem: "adapter factors of \(module.target) (\(a.count) and \(b.count) elements) do not fit its \(Shape.describe(stored.shape)) weight")
            }
            terms.append(LowRankMerge.Term(a: a, b: b, rank: rank, alpha: settings.scale * weight))
            adapters.insert(adapter)
        }
        guard let layout else { return nil }
        return (terms, adapters, layout)
    }

    /// Applies one operation; returns the index of the adapter it belongs to.
    static func apply(_ operation: TensorChange.Operation, weight: Double, to values: inout [Double], stored: TensorInfo,
                      readers: [PackReader], owners: [Int], selected: [(adapter: Adapter, weight: Double)]) throws -> Int {
        func floats(_ adapter: Int, _ name: String) throws -> [Double] {
            try readers[owners[adapter]].readTensor(name).floats().map(Double.init)
        }
        switch operation {
        case .lowRank(let module, let settings, let adapter), .dora(let module, let settings, let adapter):
            let orientation = WeightOrientation(storedShape: stored.shape, layout: settings.layout)
            let a = try floats(adapter, module.tensors[TensorRole.loraA]!), b = try floats(adapter, module.tensors[TensorRole.loraB]!)
            if let magnitude = module.tensors[TensorRole.magnitude] {
                MergeArithmetic.applyDoRA(&values, orientation: orientation, a: a, b: b, rank: settings.rank, scale: settings.scale,
                                          magnitude: try floats(adapter, magnitude), weight: weight)
            } else {
                MergeArithmetic.addLowRank(&values, orientation: orientation, a: a, b: b, rank: settings.rank, alpha: settings.scale * weight)
            }
            return adapter
        case .ia3(let module, let settings, let adapter):
            let vector = try floats(adapter, module.tensors[TensorRole.ia3Vector]!)
            let orientation = stored.shape.count == 2 ? WeightOrientation(storedShape: stored.shape, layout: settings.layout) : nil
            MergeArithmetic.applyIA3(&values, orientation: orientation, vector: vector, side: settings.side, weight: weight)
            return adapter
        case .replace(let tensor, let adapter):
            MergeArithmetic.replace(&values, with: try floats(adapter, tensor), weight: weight)
            return adapter
        case .replaceRows(let tensor, let rows, let adapter):
            let replacement = try floats(adapter, tensor)
            let width = stored.shape.count == 2 ? stored.shape[1] : 0
            guard width > 0, replacement.count == rows.count * width, rows.allSatisfy({ $0 >= 0 && $0 < stored.shape[0] }) else {
                throw InputError(file: readers[owners[adapter]].path, problem: "the rows replacing \(stored.name) (\(rows.count) of them, \(replacement.count) values) do not fit its \(Shape.describe(stored.shape)) shape")
            }
            MergeArithmetic.replaceRows(&values, width: width, rows: rows, with: replacement, weight: weight)
            return adapter
        case .delta(let tensor, let adapter):
            MergeArithmetic.add(&values, try floats(adapter, tensor), scale: weight)
            return adapter
        case .addBias(let tensor, let scale, let adapter):
            MergeArithmetic.add(&values, try floats(adapter, tensor), scale: scale * weight)
            return adapter
        case .veRA(let module, let settings, let adapter):
            let reader = readers[owners[adapter]]
            let orientation = WeightOrientation(storedShape: stored.shape, layout: settings.layout)
            func shape(_ role: String) -> [Int] { reader.entry(named: module.tensors[role]!)?.shape ?? [] }
            try MergeArithmetic.addVeRA(&values, orientation: orientation, a: try floats(adapter, module.tensors[TensorRole.loraA]!), aShape: shape(TensorRole.loraA),
                                        b: try floats(adapter, module.tensors[TensorRole.loraB]!), bShape: shape(TensorRole.loraB),
                                        lambdaB: try floats(adapter, module.tensors[TensorRole.veraLambdaB]!),
                                        lambdaD: try floats(adapter, module.tensors[TensorRole.veraLambdaD]!), rank: settings.rank, weight: weight,
                                        fail: { InputError(file: reader.path, problem: "module \(module.target): \($0)") })
            return adapter
        case .adaLoRA(let module, let settings, let adapter):
            let orientation = WeightOrientation(storedShape: stored.shape, layout: settings.layout)
            MergeArithmetic.addAdaLoRA(&values, orientation: orientation, a: try floats(adapter, module.tensors[TensorRole.loraA]!),
                                       b: try floats(adapter, module.tensors[TensorRole.loraB]!),
                                       singularValues: try floats(adapter, module.tensors[TensorRole.singularValues]!),
                                       rank: settings.rank, alpha: settings.scale * weight)
            return adapter
        case .denseProduct(let module, let adapter):
            let reader = readers[owners[adapter]]
            func fail(_ problem: String) -> Error { InputError(file: reader.path, problem: "module \(module.target): \(problem)") }
            func factors(_ role: String) throws -> [Double] { try floats(adapter, module.tensors[role]!) }
            switch module.change {
            case .loha(let settings):
                try MergeArithmetic.addLoHa(&values, shape: stored.shape, factors: factors, settings: settings, weight: weight, fail: fail)
            case .lokr(let settings):
                try MergeArithmetic.addLoKr(&values, shape: stored.shape, roles: Set(module.tensors.keys),
                                            tensorShape: { reader.entry(named: module.tensors[$0]!)?.shape ?? [] },
                                            factors: factors, settings: settings, weight: weight, fail: fail)
            default:
                preconditionFailure("only LoHa and LoKr modules become dense products")
            }
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
