import CDTypeKernels

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
        precondition(before.count == merged.count && after.count == merged.count, "survival of \(tensor): element counts")
        var sums = [0.0, 0.0, 0.0]
        peftpack_survival_sums(before, merged, after, merged.count, &sums)
        let (kept, change, dot) = (sums[0], sums[1], sums[2])
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

    /// A bitsandbytes weight: `before` the base's dequantized values, `merged` the fp32 merge,
    /// `after` the requantization's values as they read back, and the stored codes of each (4-bit
    /// nibbles, high first, or int8 bytes).
    static func measure(_ name: String, layout: QuantizedWeightLayout, before: [Float], merged: [Float], after: [Float],
                        oldCodes: UnsafeRawBufferPointer, newCodes: [UInt8]) -> QuantizationSurvival {
        let isFourBit: Bool
        if case .fourBit = layout { isFourBit = true } else { isFourBit = false }
        let unchanged = newCodes.withUnsafeBytes { newCodes in
            precondition(oldCodes.count == newCodes.count && newCodes.count >= (isFourBit ? (merged.count + 1) / 2 : merged.count), "codes of \(name)")
            let (old, new) = (oldCodes.bindMemory(to: UInt8.self).baseAddress, newCodes.bindMemory(to: UInt8.self).baseAddress)
            return isFourBit ? peftpack_equal_nibbles(old, new, merged.count) : peftpack_equal_bytes(old, new, merged.count)
        }
        return QuantizationSurvival(tensor: name, type: layout.quantTypeName, before: before, merged: merged, after: after, unchanged: unchanged)
    }
}
