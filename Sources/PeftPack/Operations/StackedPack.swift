import Foundation

/// The pack `stack` writes, tensor by tensor as each is made, each refused if it holds NaN/Inf;
/// the adapter document goes in last. Nothing is left at the destination unless `finish` runs.
final class StackedPack {
    private let writer: PackWriter
    /// Elements written so far.
    private(set) var parameters = 0

    init(destination: String, level: Int32) throws {
        writer = try PackWriter(destination: destination, options: .init(level: level))
    }

    func add(_ name: String, _ tensor: HostTensor) throws {
        try tensor.bytes.withUnsafeBytes { try FiniteValues.checkResult($0, dtype: tensor.dtype, name: name, what: "the stacked tensor") }
        try writer.append(tensor, name: name)
        parameters += tensor.elementCount
    }

    /// An fp32 tensor written from its values, without a byte copy.
    func add(_ name: String, floats: [Float], shape: [Int]) throws {
        try floats.withUnsafeBufferPointer { values in
            // Σx² is finite exactly when every value is, and far cheaper than the bit survey.
            if !BLAS.squaredNorm(values).isFinite {
                try FiniteValues.checkResult(UnsafeRawBufferPointer(values), dtype: .f32, name: name, what: "the stacked tensor")
            }
            try writer.append(name: name, dtype: .f32, shape: shape, bytes: UnsafeRawBufferPointer(values))
        }
        parameters += floats.count
    }

    /// A stacked low-rank module's A, B and B bias, and the module that names them.
    func add(_ stacked: Stack.StackedModule, adapter: String) throws -> AdapterModule {
        let rank = stacked.a.rows
        let aName = AdapterModule.tensorName(adapter: adapter, target: stacked.target, role: TensorRole.loraA)
        let bName = AdapterModule.tensorName(adapter: adapter, target: stacked.target, role: TensorRole.loraB)
        var roles = [TensorRole.loraA: aName, TensorRole.loraB: bName]
        try add(aName, floats: stacked.a.values, shape: [rank, stacked.a.cols])
        try add(bName, floats: stacked.b.values, shape: [stacked.b.rows, rank])
        if let biasSum = stacked.biasSum {
            let biasName = AdapterModule.tensorName(adapter: adapter, target: stacked.target, role: TensorRole.loraBBias)
            roles[TensorRole.loraBBias] = biasName
            try add(biasName, floats: biasSum, shape: [biasSum.count])
        }
        return AdapterModule(target: stacked.target, change: .lowRank(LowRankModule(layout: stacked.layout, rank: rank, scale: 1)), tensors: roles)
    }

    func finish(_ document: PackDocument) throws {
        try writer.finish(document: try StrictJSON.encoding(document))
    }

    func abandon() { writer.abandon() }
}
