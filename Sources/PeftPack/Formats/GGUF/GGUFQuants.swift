import CDTypeKernels

/// ggml's block formats, dequantized as gguf-py 0.19's `gguf.quants.dequantize` does, bit for
/// bit: every scale stored as fp16 is widened to fp32 first, then the arithmetic runs in fp32 in
/// gguf-py's order — a K-quant's sub-block scale is `d · sc` rounded before it multiplies the
/// quant, and minimums are subtracted (`(d·sc)·q − dmin·m`) or added (`d·q + m`) after the product
/// is rounded. (A product of an fp16 scale and a quant or 6-bit scale has at most 11 + 8
/// significant bits, so it is exact in fp32 and only the final add or subtract rounds: fused or
/// not, the result is the same, but the order is gguf-py's regardless.) Blocks run along a
/// tensor's innermost dimension, which must therefore be a whole number of blocks (ggml's rule).
extension GGUF.ElementType {
    /// Elements per block and bytes per block (ggml's `blck_size` and `type_size`).
    var block: (elements: Int, bytes: Int) {
        switch self {
        case .f32: (1, 4)
        case .f16, .bf16: (1, 2)
        case .q4_0: (32, 18)
        case .q4_1: (32, 20)
        case .q5_0: (32, 22)
        case .q5_1: (32, 24)
        case .q8_0: (32, 34)
        case .q4_K: (256, 144)
        case .q5_K: (256, 176)
        case .q6_K: (256, 210)
        }
    }

    /// ggml's name of the type, as llama.cpp and gguf-py print it.
    public var ggmlName: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        }
    }

    /// The types peftpack reads, in ggml's numbering order, for messages that list them.
    static var readableNames: String {
        [GGUF.ElementType.f32, .f16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K, .bf16].map(\.ggmlName).joined(separator: ", ")
    }

    /// ggml's names of the types peftpack does not read (gguf-py's GGMLQuantizationType), so a
    /// refusal names what the file holds.
    static let unreadableNames: [UInt32: String] = [
        9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
        20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
        29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
    ]

    /// How a refusal names a type code: ggml's name when it has one.
    static func describe(code: UInt32) -> String {
        unreadableNames[code].map { "\($0) (ggml type \(code))" } ?? "ggml type \(code), which ggml does not define"
    }

    /// Bytes of a tensor of `shape` (row-major, innermost last), or nil when its innermost
    /// dimension is not a whole number of blocks or the size overflows.
    func byteCount(shape: [Int]) -> Int? {
        guard let inner = shape.last, let count = Shape.elementCount(shape), inner % block.elements == 0 else { return nil }
        let (blocks, overflow) = (count / block.elements).multipliedReportingOverflow(by: block.bytes)
        return overflow ? nil : blocks
    }

    /// Widens whole blocks: `source` holds `destination.count / block.elements` blocks.
    func dequantize(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) {
        let (elements, bytes) = block
        precondition(destination.count % elements == 0 && source.count == destination.count / elements * bytes)
        switch self {
        case .f32, .f16, .bf16:
            // gguf-py views F32 as is, widens F16 exactly and shifts BF16 into the high half.
            DTypeConversion.toFloat32(source, dtype: self == .f32 ? .f32 : (self == .f16 ? .f16 : .bf16), into: destination)
            return
        default:
            break
        }
        for index in 0..<(destination.count / elements) {
            let block = UnsafeRawBufferPointer(rebasing: source[(index * bytes)..<((index + 1) * bytes)])
            let out = UnsafeMutableBufferPointer(rebasing: destination[(index * elements)..<((index + 1) * elements)])
            switch self {
            case .q4_0: GGMLBlocks.q4_0(block, out)
            case .q4_1: GGMLBlocks.q4_1(block, out)
            case .q5_0: GGMLBlocks.q5_0(block, out)
            case .q5_1: GGMLBlocks.q5_1(block, out)
            case .q8_0: GGMLBlocks.q8_0(block, out)
            case .q4_K: GGMLBlocks.q4_K(block, out)
            case .q5_K: GGMLBlocks.q5_K(block, out)
            case .q6_K: GGMLBlocks.q6_K(block, out)
            case .f32, .f16, .bf16: preconditionFailure("handled above")
            }
        }
    }
}

/// One block of each quantized type. The 32-element types put element j (j < 16) in the low
/// nibble of byte j and element j + 16 in its high nibble; Q5's fifth bit of element j is bit j of
/// a little-endian uint32.
enum GGMLBlocks {
    static func half(_ block: UnsafeRawBufferPointer, at offset: Int) -> Float {
        var bits = block.loadUnaligned(fromByteOffset: offset, as: UInt16.self).littleEndian
        var value: Float = 0
        peftpack_f16_to_f32(&bits, &value, 1)
        return value
    }

    /// Calls `body(j, quant)` for the 32 4-bit quants of a block whose nibbles start at `offset`,
    /// a byte at a time (low nibble: element j, high nibble: element j + 16).
    @inline(__always)
    static func forEachNibble(_ block: UnsafeRawBufferPointer, at offset: Int, _ body: (Int, UInt8) -> Void) {
        for j in 0..<16 {
            let byte = block[offset + j]
            body(j, byte & 0x0F)
            body(j + 16, byte >> 4)
        }
    }

    static func q4_0(_ block: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
        let d = half(block, at: 0)
        forEachNibble(block, at: 2) { j, q in out[j] = d * Float(Int(q) - 8) }
    }

    static func q4_1(_ block: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
        let d = half(block, at: 0), m = half(block, at: 2)
        forEachNibble(block, at: 4) { j, q in
            let scaled = d * Float(q)
            out[j] = scaled + m
        }
    }

    static func q5_0(_ block: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
        let d = half(block, at: 0)
        let high = block.loadUnaligned(fromByteOffset: 2, as: UInt32.self).littleEndian
        forEachNibble(block, at: 6) { j, low in
            let q = Int(low) | Int((high &>> UInt32(j)) & 1) << 4
            out[j] = d * Float(q - 16)
        }
    }

    static func q5_1(_ block: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
        let d = half(block, at: 0), m = half(block, at: 2)
        let high = block.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
        forEachNibble(block, at: 8) { j, low in
            let q = Int(low) | Int((high &>> UInt32(j)) & 1) << 4
            let scaled = d * Float(q)
            out[j] = scaled + m
        }
    }

    static func q8_0(_ block: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
        let d = half(block, at: 0)
        for j in 0..<32 { out[j] = Float(Int8(bitPattern: block[2 + j])) * d }
    }

    /// Sub-block `sub`'s 6-bit scale and minimum of Q4_K and Q5_K, packed for eight sub-blocks
    /// in 12 bytes at `offset`: bytes 0–3 hold scales 0–3 in their low six bits, bytes 4–7
    /// minimums 0–3 likewise; scales and minimums 4–7 take their low four bits from the nibbles of
    /// bytes 8–11 (scale low, minimum high) and their top two bits from the spare top bits of
    /// bytes 0–3 and 4–7.
    static func scaleAndMinimum(_ block: UnsafeRawBufferPointer, at offset: Int, sub: Int) -> (scale: UInt8, minimum: UInt8) {
        if sub < 4 { return (block[offset + sub] & 0x3F, block[offset + 4 + sub] & 0x3F) }
        let i = sub - 4, low = block[offset + 8 + i]
        return ((low & 0x0F) | ((block[offset + i] >> 2) & 0x30), (low >> 4) | ((block[offset + 4 + i] >> 2) & 0x30))
    }

    /// Q4_K: d, dmin (fp16), the 12 scale bytes, then 128 bytes of nibbles: sub-block 2c takes the
    /// low nibbles of bytes 32c…32c+31 and sub-block 2c+1 their high nibbles.
    static func q4_K(_ block: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
        let d = half(block, at: 0), dmin = half(block, at: 2)
        for sub in 0..<8 {
            let (packedScale, packedMinimum) = scaleAndMinimum(block, at: 4, sub: sub)
            let scale = d * Float(packedScale), minimum = dmin * Float(packedMinimum)
            let bytes = 16 + sub / 2 * 32, shift = UInt8(sub % 2 * 4)
            for i in 0..<32 {
                let scaled = scale * Float((block[bytes + i] &>> shift) & 0x0F)
                out[sub * 32 + i] = scaled - minimum
            }
        }
    }

    /// Q5_K: as Q4_K with 32 bytes of fifth bits before the nibbles: bit `sub` of byte i is the
    /// fifth bit of element i of sub-block `sub`.
    static func q5_K(_ block: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
        let d = half(block, at: 0), dmin = half(block, at: 2)
        for sub in 0..<8 {
            let (packedScale, packedMinimum) = scaleAndMinimum(block, at: 4, sub: sub)
            let scale = d * Float(packedScale), minimum = dmin * Float(packedMinimum)
            let bytes = 48 + sub / 2 * 32, shift = UInt8(sub % 2 * 4)
            for i in 0..<32 {
                let q = (block[bytes + i] &>> shift) & 0x0F | ((block[16 + i] &>> UInt8(sub)) & 1) << 4
                let scaled = scale * Float(q)
                out[sub * 32 + i] = scaled - minimum
            }
        }
    }

    /// Q6_K: 128 bytes of low nibbles, 64 bytes of two-bit high parts, 16 int8 scales (one per 16
    /// elements), then d (fp16). Each half h of 128 elements: element r takes nibble r / 64 of
    /// low byte 64h + r % 64 and bits 2·(r / 32) of high byte 32h + r % 32; quants are offset by 32.
    /// Walked as ggml does, four elements per high byte.
    static func q6_K(_ block: UnsafeRawBufferPointer, _ out: UnsafeMutableBufferPointer<Float>) {
        let d = half(block, at: 208)
        for h in 0..<2 {
            let low = h * 64, high = 128 + h * 32, first = h * 128
            for l in 0..<32 {
                let bits = block[high + l], near = block[low + l], far = block[low + 32 + l]
                let quants = [(near & 0x0F) | (bits & 0x03) << 4, (far & 0x0F) | (bits >> 2 & 0x03) << 4,
                              near >> 4 | (bits >> 4 & 0x03) << 4, far >> 4 | (bits >> 6) << 4]
                for (quarter, q) in quants.enumerated() {
                    let e = first + quarter * 32 + l
                    let scale = d * Float(Int8(bitPattern: block[192 + e / 16]))
                    out[e] = scale * Float(Int(q) - 32)
                }
            }
        }
    }
}
