import Foundation
@testable import PeftPack

/// A reference file the Python stack wrote (`input_ids` I64 [batch, seq] and fp32 outputs): the
/// ids as the runtime takes them, and any output as a FloatTensor to compare with.
struct ReferenceFile {
    let file: SafetensorsFile

    init(path: String) throws {
        file = try SafetensorsFile(path: path)
    }

    func inputRows() throws -> [[Int]] {
        let ids = try file.tensor("input_ids")
        precondition(ids.dtype == .i64 && ids.shape.count == 2)
        let flat = ids.bytes.withUnsafeBytes { raw in
            (0..<ids.elementCount).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) }
        }
        return (0..<ids.shape[0]).map { Array(flat[($0 * ids.shape[1])..<(($0 + 1) * ids.shape[1])]) }
    }

    func output(_ key: String) throws -> FloatTensor {
        let tensor = try file.tensor(key)
        return FloatTensor(shape: tensor.shape, values: tensor.floats())
    }

    /// The model's output on the reference ids (with `adapters` applied) against output `key`.
    func compare(_ model: TransformerModel, adapters: AdapterSet? = nil, with key: String, label: String,
                 tolerance: Verify.Tolerance) throws -> Verify.Comparison {
        try Verify.compare(try model.forward(inputIds: try inputRows(), adapters: adapters), try output(key),
                           label: label, logits: true, tolerance: tolerance)
    }
}
