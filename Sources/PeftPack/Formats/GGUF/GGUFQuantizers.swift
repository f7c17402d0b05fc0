import CDTypeKernels

/// The way back from fp32 to each ggml type peftpack writes, bit for bit with the tool a user
/// would otherwise run: the float types and the 32-element types as gguf-py 0.19 writes them
/// (`gguf.quants.quantize`, what convert_hf_to_gguf.py uses), the K-quants as ggml's reference
/// row quantizers do (`quantize_row_q*_K_ref`, what llama-quantize uses without an imatrix).
/// fixtures/data/gguf_quantize holds both references' bytes for the same inputs.
extension GGUF.ElementType {
    /// The types peftpack writes (quantizes to).
    static let writable: [GGUF.ElementType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K]

    /// Quantizes whole blocks: `values.count` is a multiple of block.elements; `destination` holds
    /// values.count / block.elements * block.bytes bytes. Single-threaded (callers split rows).
    func quantize(_ values: UnsafeBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer) {
        let (elements, bytes) = block
        precondition(values.count % elements == 0 && destination.count == values.count / elements * bytes)
        guard let source = values.baseAddress, let out = destination.baseAddress else { return }
        switch self {
        case .f32: out.copyMemory(from: source, byteCount: values.count * 4)
        case .f16: FloatNarrowing.numpyHalf(values, into: out.assumingMemoryBound(to: UInt16.self))
        case .bf16: FloatNarrowing.ggufBFloat16(values, into: out.assumingMemoryBound(to: UInt16.self))
        default:
            for index in 0..<(values.count / elements) {
                let x = source + index * elements, y = out + index * bytes
                switch self {
                case .q4_0: GGUFPyQuantizer.q4_0(x, y)
                case .q4_1: GGUFPyQuantizer.q4_1(x, y)
                case .q5_0: GGUFPyQuantizer.q5_0(x, y)
                case .q5_1: GGUFPyQuantizer.q5_1(x, y)
                case .q8_0: GGUFPyQuantizer.q8_0(x, y)
                case .q4_K: GGMLKQuantizer.q4_K(x, y)
                case .q5_K: GGMLKQuantizer.q5_K(x, y)
                case .q6_K: GGMLKQuantizer.q6_K(x, y)
                case .f32, .f16, .bf16: preconditionFailure("handled above")
                }
            }
        }
    }
}

/// fp32 to the 16-bit float types as gguf-py writes them.
enum FloatNarrowing {
    /// numpy's `astype(np.float16)`: round to nearest, ties to even, for every non-NaN value (our
    /// kernel's); a NaN keeps its sign and the top ten bits of its payload, and one whose payload
    /// would vanish becomes 0x7C01 — numpy's own rule (npy_floatbits_to_halfbits), which leaves a
    /// signalling NaN signalling where F16C would quiet it.
    static func numpyHalf(_ values: UnsafeBufferPointer<Float>, into out: UnsafeMutablePointer<UInt16>) {
        peftpack_f32_to_f16(values.baseAddress!, out, values.count)
        for (index, value) in values.enumerated() where value.isNaN { out[index] = numpyHalfNaN(value) }
    }

    static func numpyHalf(_ value: Float) -> UInt16 {
        value.isNaN ? numpyHalfNaN(value) : Float16(value).bitPattern
    }

    private static func numpyHalfNaN(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let payload = UInt16(truncatingIfNeeded: (bits & 0x007F_FFFF) >> 13)
        return UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000) | 0x7C00 | max(payload, 1)
    }

    /// gguf-py's BF16 (ggml_compute_fp32_to_bf16): a NaN keeps its top 16 bits with the quiet
    /// bit set; everything else rounds to nearest, ties to even, by adding 0x7FFF plus the kept
    /// lowest bit (so a finite value past the largest bf16 becomes infinity).
    static func ggufBFloat16(_ values: UnsafeBufferPointer<Float>, into out: UnsafeMutablePointer<UInt16>) {
        for (index, value) in values.enumerated() {
            var bits = value.bitPattern
            if bits & 0x7FFF_FFFF > 0x7F80_0000 { bits = (bits & 0xFFFF_0000) | 0x0040_0000 }
            out[index] = UInt16(truncatingIfNeeded: (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)
        }
    }
}
