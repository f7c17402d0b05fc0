import CDTypeKernels

/// bitsandbytes' 4-bit dequantization (`functional.dequantize_4bit` on CPU, bnb 0.50), element for
/// element: the code of each nibble (the high nibble is the first element of its byte) times its
/// block's absmax, one fp32 multiplication, then one rounding to the quant state's dtype (nearest,
/// ties to even, as bnb's `float_to_bf16` and F16C conversion do). With double quantization the
/// absmax of a block is first rebuilt in fp32 as bnb's `dequantize_blockwise` does it,
/// nested_code[q] × nested_absmax[block / nested_blocksize], then the offset is added.
///
/// Elements map to blocks by their flat row-major index, as bnb's scalar CPU kernel (used on AVX2
/// machines) and its torch fallback do; bnb's AVX-512 kernel indexes absmax per row instead, which
/// gives the same blocks only when the last dimension is a multiple of the block size.
enum FourBitDequantizer {
    /// Per-block absmax values in fp32 for blocks `blocks`, from the stored tensors' raw bytes.
    static func plainScales(_ absmax: UnsafeRawBufferPointer, blocks: Range<Int>) -> [Float] {
        blocks.map { loadFloat(absmax, at: $0) }
    }

    static func nestedScales(codes: UnsafeRawBufferPointer, nestedCode: UnsafeRawBufferPointer,
                             nestedAbsmax: UnsafeRawBufferPointer, nested: FourBitQuantState.Nested,
                             blocks: Range<Int>) -> [Float] {
        blocks.map { block in
            let quantized = loadFloat(nestedCode, at: Int(codes[block])) * loadFloat(nestedAbsmax, at: block / nested.blocksize)
            return quantized + nested.offset
        }
    }

    /// The blocks holding elements `range`.
    static func blocks(of range: Range<Int>, blocksize: Int) -> Range<Int> {
        guard !range.isEmpty else { return 0..<0 }
        return (range.lowerBound / blocksize)..<((range.upperBound - 1) / blocksize + 1)
    }

    /// fp32 products for elements `range`; `scales` holds the absmax of `blocks(of: range)`.
    static func products(packed: UnsafeRawBufferPointer, scales: [Float], state: FourBitQuantState,
                         elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(destination.count == range.count, "dequantization buffer size")
        let codes = state.quantType.codes(lastDimensionIsOdd: state.shape.last! % 2 == 1)
        precondition(scales.count >= blocks(of: range, blocksize: state.blocksize).count, "absmax of every block")
        packed.withMemoryRebound(to: UInt8.self) { packed in
            precondition(range.isEmpty || (range.upperBound + 1) / 2 <= packed.count, "packed codes of every element")
            peftpack_dequantize_4bit(packed.baseAddress, range.lowerBound, range.count, codes, scales, state.blocksize, destination.baseAddress)
        }
    }

    static func loadFloat(_ raw: UnsafeRawBufferPointer, at index: Int) -> Float {
        Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)))
    }
}
