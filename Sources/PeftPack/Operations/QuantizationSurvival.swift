/// How much of a merged module's change survives requantizing into a quantized base: with Q(W)
/// the base's dequantized weight, Q(W + ΔW) the requantized merge's and ΔW = fp32(W + ΔW) − Q(W),
/// the norm ratio ‖Q(W + ΔW) − Q(W)‖ / ‖ΔW‖, their cosine, the share of quantized values left
/// unchanged (bitsandbytes: 4-bit and int8 codes; GGUF and MLX: dequantized values, since a
/// block's or group's scale can move with its codes) and `survival`, the share of ΔW the written change carries along ΔW
/// (⟨Q(W + ΔW) − Q(W), ΔW⟩ / ‖ΔW‖², the norm ratio times the cosine: 1 when all of it survived,
/// 0 when none did). A LoRA update far below the quantization step leaves most values unchanged
/// and survival well under 1: the merged model then runs another function than the adapter on
/// the quantized base does. Sums in fp64.
public struct QuantizationSurvival: Encodable, Sendable {
    public var tensor: String
    /// The quantized type the figures are of (the type the base stores it in, or `--dtype`'s).
    public var type: String
    public var normRatio: Double
    public var cosine: Double
    public var survival: Double
    public var unchangedCodeShare: Double
    /// Set when the module was written at this wider type instead.
    public var promotedTo: String?

    /// The figures from the base's values, the fp32 merge and the requantized merge's values
    /// (any common element order) and how many quantized values stayed the same.
    init(tensor: String, type: String, before: [Float], merged: [Float], after: [Float], unchanged: Int) {
        var kept = 0.0, change = 0.0, dot = 0.0
        for index in merged.indices {
            let delta = Double(merged[index]) - Double(before[index])
            let survived = Double(after[index]) - Double(before[index])
            kept += survived * survived
            change += delta * delta
            dot += survived * delta
        }
        self.tensor = tensor
        self.type = type
        normRatio = change > 0 ? (kept / change).squareRoot() : 0
        cosine = kept > 0 && change > 0 ? dot / (kept * change).squareRoot() : 0
        survival = change > 0 ? dot / change : 0
        unchangedCodeShare = merged.isEmpty ? 1 : Double(unchanged) / Double(merged.count)
    }

    /// A GGUF tensor requantized to `type`: `base` its dequantized values, `merged` the fp32
    /// merge and `quantized` its blocks of `type`, all in the file's element order.
    static func measure(_ name: String, as type: GGUF.ElementType, base: [Float], merged: [Float], quantized: [UInt8]) -> QuantizationSurvival {
        var after = [Float](repeating: 0, count: merged.count)
        quantized.withUnsafeBytes { source in after.withUnsafeMutableBufferPointer { type.dequantize(source, into: $0) } }
        var unchanged = 0
        // By value: a block that dequantizes a zero as −0 has not changed it.
        for index in base.indices where base[index] == after[index] { unchanged += 1 }
        return QuantizationSurvival(tensor: name, type: type.ggmlName, before: base, merged: merged, after: after, unchanged: unchanged)
    }

    static func measure(_ name: String, base: Checkpoint, requantized: Checkpoint, merged: [Float]) throws -> QuantizationSurvival {
        let before = try base.tensor(name).floats(), after = try requantized.tensor(name).floats()
        let oldCodes = try base.stored.tensor(name).bytes, newCodes = try requantized.stored.tensor(name).bytes
        let layout = base.dequantizer?.layout(name)
        let isFourBit: Bool
        if case .fourBit? = layout { isFourBit = true } else { isFourBit = false }
        var unchanged = 0
        for index in merged.indices {
            if isFourBit {
                let shift = index & 1 == 0 ? 4 : 0
                if (oldCodes[index >> 1] >> shift) & 0x0F == (newCodes[index >> 1] >> shift) & 0x0F { unchanged += 1 }
            } else if oldCodes[index] == newCodes[index] {
                unchanged += 1
            }
        }
        return QuantizationSurvival(tensor: name, type: layout?.quantTypeName ?? "int8", before: before, merged: merged, after: after, unchanged: unchanged)
    }
}
