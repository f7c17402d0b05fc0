import CDTypeKernels

/// bitsandbytes' 4-bit quantization on CPU (`functional.quantize_4bit`, bnb 0.50.2, whose CPU backend
/// runs the torch implementation in `backends/default/ops.py`), the inverse FourBitDequantizer reads.
///
/// Values are fp32 (bf16/fp16 originals widen exactly, as `A.float()` does). Per block of the flat
/// row-major order: absmax = max |x|. Whole blocks scale by one fp32 reciprocal, x × fp32(1 /
/// max(absmax, 1e-38)); the partial last block divides, x / max(absmax, 1e-38), and stores the clamped
/// absmax — two roundings bnb spells differently, kept as it does. The scaled value, clamped to
/// [-1, 1], takes the sorted code whose bucket holds it (`torch.bucketize` on the fp32 midpoints of
/// neighbouring codes: a value equal to a midpoint goes to the lower code). Two codes per byte, the
/// first element in the high nibble; an odd count pads the last low nibble with the code of 0.
///
/// With `compress_statistics` (double quantization) the absmax values lose their mean (torch's fp32
/// sum order, TorchCPUSum) and are quantized to 8 bits in blocks of 256 by DynamicBlockwiseQuantizer.
enum FourBitQuantizer {
    struct Quantized: Equatable {
        var packed: [UInt8]
        /// fp32 per block, or with double quantization the 8-bit codes of (absmax − offset).
        var absmax: Absmax
    }

    enum Absmax: Equatable {
        case plain([Float])
        case nested(codes: [UInt8], nestedAbsmax: [Float], offset: Float)
    }

    /// bnb quantizes the absmax values in blocks of 256 whatever the 4-bit block size.
    static let nestedBlocksize = 256
    /// `clamp(min=1e-38)` on the block maximum, so an all-zero block scales by a finite 1e38.
    static let smallestScale: Float = 1e-38

    /// `nestedCode` (bnb's dynamic map, the `nested_quant_map` a double-quantized checkpoint holds)
    /// is required for double quantization and ignored otherwise.
    static func quantize(_ values: [Float], blocksize: Int, type: BitsandbytesFormat.FourBitType,
                         nestedCode: [Float]?) -> Quantized {
        precondition(BitsandbytesFormat.blocksizes.contains(blocksize), "block size \(blocksize)")
        let (bounds, order) = decisionTable(type)
        let blocks = (values.count + blocksize - 1) / blocksize
        var absmax = [Float](repeating: 0, count: blocks)
        var packed = [UInt8](repeating: 0, count: (values.count + 1) / 2)
        values.withUnsafeBufferPointer { source in
            packed.withUnsafeMutableBufferPointer { packed in
                absmax.withUnsafeMutableBufferPointer { absmax in
                    peftpack_quantize_4bit(source.baseAddress, source.count, blocksize, bounds, order, packed.baseAddress, absmax.baseAddress)
                }
            }
        }
        guard let nestedCode else { return Quantized(packed: packed, absmax: .plain(absmax)) }
        let offset = TorchCPUSum.mean(absmax)
        let nested = DynamicBlockwiseQuantizer.quantize(absmax.map { $0 - offset }, code: nestedCode, blocksize: nestedBlocksize)
        return Quantized(packed: packed, absmax: .nested(codes: nested.codes, nestedAbsmax: nested.absmax, offset: offset))
    }

    /// fp32 midpoints of the sorted codes and, per bucket, its code. FP4's order is torch.argsort's
    /// of bnb's `get_4bit_type("fp4")`, which puts code 0 (+0.0) before code 8 (the other zero).
    static func decisionTable(_ type: BitsandbytesFormat.FourBitType) -> (bounds: [Float], order: [UInt8]) {
        let order: [UInt8]
        switch type {
        case .nf4: order = Array(0..<16)
        case .fp4: order = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3]
        }
        let sorted = order.map { type.codes(lastDimensionIsOdd: false)[Int($0)] }
        return ((0..<15).map { (sorted[$0] + sorted[$0 + 1]) / 2 }, order)
    }
}
