/// LLM.int8 dequantization as `functional.int8_vectorwise_dequant` computes it (bnb 0.50, the one
/// PEFT's 8-bit merge uses): `A * SCB.view(-1, 1) * 7.874015718698502e-3` in fp32, two roundings in
/// that order — int8 × its row's SCB, then × fp32(1/127). Dividing by 127 instead differs in the
/// last bit for some elements (checked on the fixture vectors).
enum Int8Dequantizer {
    /// fp32(1/127): the literal bnb multiplies by, as torch casts a Python scalar for an fp32 tensor.
    static let reciprocalOf127: Float = 7.874015718698502e-3

    static func values(codes: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer, columns: Int,
                       elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(destination.count == range.count, "dequantization buffer size")
        for (offset, element) in range.enumerated() {
            let code = Float(Int8(bitPattern: codes[element]))
            let rowScaled = code * FourBitDequantizer.loadFloat(scales, at: element / columns)
            destination[offset] = rowScaled * reciprocalOf127
        }
    }
}
