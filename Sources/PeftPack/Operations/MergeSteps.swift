import Foundation

extension Merge {
    /// What a merge will read, compute and write, and what it refuses, decided before any output
    /// exists: the chosen adapters checked against the base (shapes, and what the packs recorded of
    /// their base), every changed tensor's operations, a tied pair's outputs, the output's tensors
    /// and shards.
    struct Plan {
        let base: BaseModel
        let binding: BaseBinding
        let selection: SelectedAdapters
        /// The chosen adapters in this base's module layouts, with their weights.
        let selected: [(adapter: Adapter, weight: Double)]
        /// The pack each selected adapter comes from (index into `readers`).
        let owners: [Int]
        let readers: [PackReader]
        let changes: [String: TensorChange]
        let skipped: [String]
        let tied: TiedMerge.Plan?
        let outputInfos: [TensorInfo]
        let shards: [[TensorInfo]]
        /// The output keeps the base's quantization_config (QuantizedOutput writes it quantized).
        let keepsQuantization: Bool

        init(base: BaseModel, selection: SelectedAdapters, options given: Options) throws {
            self.base = base
            self.selection = selection
            keepsQuantization = given.keepsQuantization && base.checkpoint.dequantizer != nil
            var options = given
            // The requantized weights are quantized from the fp32 merge, as bnb quantizes PEFT's fp32 sum.
            if keepsQuantization { options.dtype = .f32 }
            binding = BaseBinding(base: base, level: options.baseCheck)
            let selected = selection.entries.map { (adapter: base.withModuleLayouts($0.adapter), weight: $0.weight) }
            let owners = selection.entries.map(\.pack)
            (self.selected, self.owners) = (selected, owners)
            readers = selection.packs.map(\.reader)
            for (index, pack) in selection.packs.enumerated() {
                let adapters = selected.indices.filter { owners[$0] == index }.map { selected[$0].adapter }
                let targets = try adapters.flatMap { try base.check($0, shapes: pack.shape, file: pack.path) }
                try binding.add(pack.document.base, targets: targets, all: pack.document.adapters, shapes: pack.shape, file: pack.path)
            }
            var (changes, skipped) = try MergePlanner.plan(adapters: selected, base: base, skipUnmergeable: options.skipUnmergeable,
                                                             file: { selection.packs[owners[$0]].path })
            tied = try TiedMerge.plan(changes: changes, base: base, policy: options.tiedEmbeddings, outputType: options.dtype,
                                      readers: readers, owners: owners, selected: selected)
            if let tied { changes = tied.changes }
            self.changes = changes
            self.skipped = skipped
            (outputInfos, shards) = Self.layout(base.checkpoint, dtype: options.dtype, maxShardSize: options.maxShardSize, tied: tied)
        }

        /// The output's tensors (the base's, in the output dtype, and a head the untied pair adds)
        /// and their shards: the base's layout, or planned anew under a size limit.
        static func layout(_ checkpoint: Checkpoint, dtype: DType?, maxShardSize: Int?, tied: TiedMerge.Plan?) -> ([TensorInfo], [[TensorInfo]]) {
            var outputInfos = checkpoint.infos.map { info -> TensorInfo in
                guard let dtype, info.dtype.isFloatingPoint else { return info }
                return TensorInfo(name: info.name, dtype: dtype, shape: info.shape)
            }
            var shards: [[TensorInfo]]
            if let limit = maxShardSize {
                shards = CheckpointWriter.planShards(outputInfos + (tied?.addedHead.map { [$0] } ?? []), maxShardSize: limit)
            } else {
                let byName = Dictionary(uniqueKeysWithValues: outputInfos.map { ($0.name, $0) })
                shards = checkpoint.shardFiles.map { file in checkpoint.names.filter { checkpoint.shardOf($0) == file }.map { byName[$0]! } }
                if let tied, let head = tied.addedHead { shards = TiedMerge.placing(head, after: tied.report.embedding, in: shards) }
            }
            if let head = tied?.addedHead { outputInfos.append(head) }
            return (outputInfos, shards)
        }

        /// Bytes of the largest tensor the merge computes, the size of its one output buffer.
        var largestChanged: Int {
            outputInfos.filter { changes[$0.name] != nil }.map { $0.byteCount ?? 0 }.max() ?? 0
        }
    }

    /// Merge's compute and write steps, tensor by tensor in output order: each tensor is computed
    /// (a tied pair's precomputed value, a copy, the fused low-rank path or the general fold) and
    /// handed to the checkpoint writer, with what merging it did counted per adapter.
    final class TensorStream {
        private let plan: Plan
        private let progress: ((Int, Int) -> Void)?
        private(set) var changed: [Int]
        private(set) var lost: [Int]
        private(set) var maxAbsDelta = 0.0
        private(set) var bytesRead = 0
        private(set) var bytesWritten = 0
        private var done = 0
        /// One output buffer for every merged tensor `write` computes: fresh tensor-sized
        /// allocations would be page-faulted in anew each time. Made on first use (callers of
        /// `merged` alone never need it).
        private var buffer: UnsafeMutableRawBufferPointer?
        private var outputBuffer: UnsafeMutableRawBufferPointer {
            if let buffer { return buffer }
            let made = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, plan.largestChanged), alignment: 64)
            buffer = made
            return made
        }

        init(_ plan: Plan, progress: ((Int, Int) -> Void)?) {
            self.plan = plan
            self.progress = progress
            changed = [Int](repeating: 0, count: plan.selected.count)
            lost = [Int](repeating: 0, count: plan.selected.count)
        }

        deinit { buffer?.deallocate() }

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

        /// Counts base bytes read by a caller that writes its own output (QuantizedOutput).
        func recordRead(_ bytes: Int) { bytesRead += bytes }

        func reportProgress(_ done: Int, of total: Int) { progress?(done, total) }

        /// Writes the output folder's tensors, then the base's other files.
        func write(into folder: String, baseFolder: String) throws {
            let checkpoint = plan.base.checkpoint
            let metadata = try checkpoint.infos.first.flatMap { try checkpoint.metadata(ofFileHolding: $0.name) }
            // Another checkpoint of the same architecture usually differs in the first tensor already:
            // refused before anything is copied, at the cost of one tensor the merge reads next anyway.
            if let first = plan.binding.pendingTensors.first { try plan.binding.checkContent(first) }
            try CheckpointWriter.write(folder: folder, shards: plan.shards, metadata: metadata) { info, sink in
                defer {
                    checkpoint.releasePages(info.name)
                    done += 1
                    progress?(done, plan.outputInfos.count)
                }
                bytesWritten += info.byteCount ?? 0
                try tensor(info, sink)
            }
            try plan.binding.checkRemainingContent()
            try copyOtherFiles(from: baseFolder, to: folder)
            if plan.tied?.untie == true { try TiedMerge.untieConfig(in: folder) }
            if plan.base.checkpoint.dequantizer != nil && !plan.keepsQuantization { try Self.dropQuantizationConfig(in: folder) }
            if plan.base.checkpoint.decoded is MLXQuantizedWeights { try Self.dropMLXQuantization(in: folder) }
        }

        /// The merged weights of an MLX-quantized base are written dequantized: mlx-lm would
        /// otherwise build QuantizedLinear layers for them (the `quantization` entry, and the copy
        /// save_config makes of it as `quantization_config`), as `mlx_lm.fuse --dequantize` drops both.
        private static func dropMLXQuantization(in folder: String) throws {
            let path = (folder as NSString).appendingPathComponent("config.json")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
            let plain = DequantizedConfig.removingMember("quantization", from: DequantizedConfig.removingQuantizationConfig(text))
            try plain.write(toFile: path, atomically: false, encoding: .utf8)
        }

        /// The merged weights of a bitsandbytes base are written dequantized.
        private static func dropQuantizationConfig(in folder: String) throws {
            let path = (folder as NSString).appendingPathComponent("config.json")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
            try DequantizedConfig.removingQuantizationConfig(text).write(toFile: path, atomically: false, encoding: .utf8)
        }

        private func tensor(_ info: TensorInfo, _ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
            let checkpoint = plan.base.checkpoint
            if let computed = plan.tied?.outputs[info.name] {
                bytesRead += checkpoint.info(plan.base.storedName(info.name))?.byteCount ?? 0
                record(computed)
                try computed.result.bytes.withUnsafeBytes(sink)
                return
            }
            let stored = checkpoint.info(info.name)!
            bytesRead += stored.byteCount ?? 0
            try plan.binding.checkContent(info.name)
            guard let change = plan.changes[info.name] else {
                try copy(stored, as: info, sink)
                return
            }
            let out = UnsafeMutableRawBufferPointer(rebasing: outputBuffer[0..<(info.byteCount ?? 0)])
            if let fused = try checkpoint.withBytes(info.name, { try fusedMerge(info, change: change, stored: stored, base: $0, into: out) }) {
                record(changed: fused.stats.changed, lost: fused.stats.lost, largest: fused.stats.maxAbsDelta, adapters: fused.adapters)
                try sink(UnsafeRawBufferPointer(out))
                return
            }
            let merged = try fold(change.operations, into: checkpoint.tensor(info.name) as HostTensor, stored: stored, output: info,
                                  readers: plan.readers, owners: plan.owners, selected: plan.selected)
            record(merged)
            try merged.result.bytes.withUnsafeBytes(sink)
        }

        /// A changed tensor stored in the base as `stored`, merged into `output`'s dtype from the
        /// base values `base` a caller has already read (a dequantized weight, read once for its
        /// content check and its merge). Touches none of the stream's state, so callers may run
        /// several at once; they record the result.
        func merged(_ output: TensorInfo, stored: TensorInfo, base: HostTensor) throws -> FoldedTensor {
            let change = plan.changes[output.name]!
            // Not zeroed first: the fused merge writes every byte, and the fold does not use them.
            let count = output.byteCount ?? 0
            var bytes = [UInt8](unsafeUninitializedCapacity: count) { $1 = count }
            let fused = try base.bytes.withUnsafeBytes { base in
                try bytes.withUnsafeMutableBytes { try fusedMerge(output, change: change, stored: stored, base: base, into: $0) }
            }
            if let fused {
                return FoldedTensor(result: HostTensor(dtype: output.dtype, shape: output.shape, bytes: bytes), changed: fused.stats.changed,
                                    lost: fused.stats.lost, largest: fused.stats.maxAbsDelta, adapters: fused.adapters)
            }
            return try fold(change.operations, into: base, stored: stored, output: output,
                            readers: plan.readers, owners: plan.owners, selected: plan.selected)
        }

        /// The fused low-rank merge (B·A by dgemm, one rounding) into `out`, or nil when the change
        /// is not LoRA-only.
        private func fusedMerge(_ info: TensorInfo, change: TensorChange, stored: TensorInfo, base: UnsafeRawBufferPointer,
                                into out: UnsafeMutableRawBufferPointer) throws -> (stats: LowRankMerge.Statistics, adapters: Set<Int>)? {
            guard let terms = try lowRankTerms(change, stored: stored, output: info, readers: plan.readers, owners: plan.owners) else { return nil }
            let orientation = WeightOrientation(storedShape: stored.shape, layout: terms.layout)
            let stats = LowRankMerge.merge(base: base, baseType: stored.dtype, orientation: orientation, terms: terms.terms,
                                           outType: info.dtype, into: out)
            try FiniteValues.checkMerged(info, madeNonFinite: stats.nonFinite)
            return (stats, terms.adapters)
        }

        /// A tensor of the output computed as `write` computes it (a changed or added one), whole.
        func computedBytes(_ info: TensorInfo) throws -> [UInt8] {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(info.byteCount ?? 0)
            try tensor(info) { bytes.append(contentsOf: $0) }
            return bytes
        }

        /// An untouched tensor: its bytes, or its values in the output dtype.
        private func copy(_ stored: TensorInfo, as info: TensorInfo, _ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
            let checkpoint = plan.base.checkpoint
            if stored.dtype == info.dtype {
                // Window by window: an untouched embedding would otherwise sit in memory whole.
                try checkpoint.streamBytes(info.name, sink)
                return
            }
            let original = try checkpoint.tensor(info.name).floats()
            let converted = HostTensor(floats: original, shape: info.shape, dtype: info.dtype)
            try FiniteValues.checkMerged(info, madeNonFinite: FiniteValues.newlyNonFinite(converted, base: original.map(Double.init)).total)
            try converted.bytes.withUnsafeBytes(sink)
        }

        /// Each selected adapter's counts.
        var adapterReports: [AdapterReport] {
            plan.selected.enumerated().map { position, entry in
                AdapterReport(pack: plan.selection.packs[plan.owners[position]].path, adapter: entry.adapter.name, weight: entry.weight,
                              changedElements: changed[position], lostToRounding: lost[position],
                              lostShare: changed[position] > 0 ? Double(lost[position]) / Double(changed[position]) : 0)
            }
        }
    }
}
