/// How much of a merged module's change survives requantizing into a bitsandbytes base: with
/// Q(W) the base's dequantized weight, Q(W + ΔW) the requantized merge's and ΔW = fp32(W + ΔW) −
/// Q(W), the norm ratio ‖Q(W + ΔW) − Q(W)‖ / ‖ΔW‖, their cosine and the share of quantized values
/// (4-bit codes, int8 codes) left unchanged. A LoRA update far below the quantization step leaves
/// most codes unchanged and a cosine well under 1: the merged model then runs another function
/// than the adapter on the quantized base does. Sums in fp64.
public struct QuantizationSurvival: Encodable, Sendable {
    public var tensor: String
    public var normRatio: Double
    public var cosine: Double
    public var unchangedCodeShare: Double

    static func measure(_ name: String, base: Checkpoint, requantized: Checkpoint, merged: [Float]) throws -> QuantizationSurvival {
        let before = try base.tensor(name).floats(), after = try requantized.tensor(name).floats()
        var kept = 0.0, change = 0.0, dot = 0.0
        for index in merged.indices {
            let delta = Double(merged[index]) - Double(before[index])
            let survived = Double(after[index]) - Double(before[index])
            kept += survived * survived
            change += delta * delta
            dot += survived * delta
        }
        let oldCodes = try base.stored.tensor(name).bytes, newCodes = try requantized.stored.tensor(name).bytes
        let isFourBit: Bool
        if case .fourBit? = base.dequantizer?.layout(name) { isFourBit = true } else { isFourBit = false }
        var unchanged = 0
        for index in merged.indices {
            if isFourBit {
                let shift = index & 1 == 0 ? 4 : 0
                if (oldCodes[index >> 1] >> shift) & 0x0F == (newCodes[index >> 1] >> shift) & 0x0F { unchanged += 1 }
            } else if oldCodes[index] == newCodes[index] {
                unchanged += 1
            }
        }
        return QuantizationSurvival(tensor: name, normRatio: change > 0 ? (kept / change).squareRoot() : 0,
                                    cosine: kept > 0 && change > 0 ? dot / (kept * change).squareRoot() : 0,
                                    unchangedCodeShare: merged.isEmpty ? 1 : Double(unchanged) / Double(merged.count))
    }
}
