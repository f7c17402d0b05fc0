/// bitsandbytes' 8-bit blockwise quantization of fp32 values on CPU (`functional.quantize_blockwise`,
/// bnb 0.50.2's C kernel `quantize_cpu_impl<float>`, read from its machine code since the released
/// source predates it), which double quantization applies to the 4-bit absmax values. It is not a
/// nearest-code search: the kernel maps x/absmax onto a 65,536-step grid of [-1, 1] and looks the grid
/// point up in a table built once per code, so values near a decision bound can take the code on the
/// other side of it (checked against bnb on every fixture vector).
///
/// Per block: absmax = max |x| (0 for an all-zero block, whose codes are then all 0); s = clamp(x ×
/// fp32(1/absmax), -1, 1); grid = trunc(fma((1 + s) × 0.5, 65535, 0.5)), one fp32 rounding for the
/// fma; code = table[grid], where table[i] counts the midpoints (code[k] + code[k+1]) × 0.5 lying
/// strictly below fp32(2i / 65535) − 1.
enum DynamicBlockwiseQuantizer {
    static let gridSteps = 65_536

    struct Quantized: Equatable {
        var codes: [UInt8]
        var absmax: [Float]
    }

    /// `code` is the sorted 256-entry map the values are quantized with (bnb's dynamic map).
    static func quantize(_ values: [Float], code: [Float], blocksize: Int) -> Quantized {
        precondition(code.count == BitsandbytesFormat.nestedCodeCount && blocksize > 0, "dynamic map and block size")
        let table = gridTable(code)
        var codes = [UInt8](repeating: 0, count: values.count)
        var absmax: [Float] = []
        for start in stride(from: 0, to: values.count, by: blocksize) {
            let block = start..<min(start + blocksize, values.count)
            let blockMax = max(0, values[block].reduce(-Float.infinity) { max($0, abs($1)) })
            absmax.append(blockMax)
            guard blockMax != 0 else { continue }
            let reciprocal = 1 / blockMax
            for index in block {
                let scaled = min(max(values[index] * reciprocal, -1), 1)
                let grid = Float(0.5).addingProduct((1 + scaled) * 0.5, 65535)
                codes[index] = table[Int(grid) & 0xFFFF]
            }
        }
        return Quantized(codes: codes, absmax: absmax)
    }

    static func gridTable(_ code: [Float]) -> [UInt8] {
        let midpoints = (0..<(code.count - 1)).map { (code[$0] + code[$0 + 1]) * 0.5 }
        var table = [UInt8](repeating: 0, count: gridSteps)
        var index = 0
        for step in 0..<gridSteps {
            let point = (Float(step) + Float(step)) / 65535 - 1
            while index < midpoints.count, point > midpoints[index] { index += 1 }
            table[step] = UInt8(index)
        }
        return table
    }
}
