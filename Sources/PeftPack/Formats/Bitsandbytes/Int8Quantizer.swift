/// What LLM.int8's `Int8Params` makes of a weight on CPU (bnb 0.50.2, `Int8Params._quantize` →
/// `functional.int8_vectorwise_quant` with threshold 0), as PEFT's 8-bit merge rebuilds the layer:
/// the values rounded to fp16 first, SCB = the fp32 max |x| of each row, and each code
/// round(x × scale), one fp32 product rounded half to even (`torch.round`). The scale is bnb's
/// `127.0 / row_stats`, which torch evaluates as `row_stats.reciprocal() * 127`: two fp32 roundings,
/// fp32(fp32(1 / SCB) × 127). A correctly rounded 127 / SCB gives another code for products within
/// an ulp of k + ½ (found on a real merge: 9 of 114,688 codes). An all-zero row has SCB 0: its
/// scale is inf, 0 × inf is NaN, and the int8 cast of NaN gives 0 on x86.
enum Int8Quantizer {
    struct Quantized: Equatable {
        var codes: [Int8]
        var scales: [Float]
    }

    static func quantize(_ values: [Float], columns: Int) -> Quantized {
        precondition(columns > 0 && values.count % columns == 0, "int8 weight is not whole rows")
        let half = HostTensor(floats: values, shape: [values.count], dtype: .f16).floats()
        var codes = [Int8](repeating: 0, count: half.count)
        var scales: [Float] = []
        for start in stride(from: 0, to: half.count, by: columns) {
            let row = start..<(start + columns)
            let rowMax = half[row].reduce(Float(0)) { max($0, abs($1)) }
            scales.append(rowMax)
            let scale = (1 / rowMax) * 127
            for index in row {
                let scaled = (half[index] * scale).rounded(.toNearestOrEven)
                codes[index] = scaled.isNaN ? 0 : Int8(scaled)
            }
        }
        return Quantized(codes: codes, scales: scales)
    }
}
