/// The names and constants of bitsandbytes checkpoints as transformers saves them (bitsandbytes
/// 0.50, transformers 5): every suffix a quantized Linear adds next to its `weight`, the 4-bit code
/// tables and the block sizes bnb accepts. Readers and validation use only these.
public enum BitsandbytesFormat {
    /// `<module>.weight.quant_state.bitsandbytes__<type>`: a U8 tensor holding the JSON quant state.
    public static let quantStateInfix = ".quant_state.bitsandbytes__"
    /// Companions of a 4-bit `<module>.weight`, each named `<module>.weight<suffix>`.
    public static let absmaxSuffix = ".absmax"
    public static let quantMapSuffix = ".quant_map"
    public static let nestedAbsmaxSuffix = ".nested_absmax"
    public static let nestedQuantMapSuffix = ".nested_quant_map"
    /// Companions of an 8-bit `<module>.weight`, named `<module><suffix>`.
    public static let int8ScalesSuffix = ".SCB"
    public static let int8WeightFormatSuffix = ".weight_format"
    /// The only LLM.int8 layout bnb loads: row-major (`weight_format` 0, "row").
    public static let int8RowMajorFormat: UInt8 = 0

    /// `functional.dequantize_4bit` refuses any other block size.
    public static let blocksizes: Set<Int> = [32, 64, 128, 256, 512, 1024, 2048, 4096]
    /// Entries of the nested (double-quantization) code, bnb's 8-bit dynamic map.
    public static let nestedCodeCount = 256
    /// Keys `QuantState.from_dict` accepts in the JSON; it asserts there are no others.
    static let quantStateKeys: Set<String> = [
        "quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset",
    ]

    /// The 4-bit data types. Their code tables are those of bnb's CPU kernel (csrc/cpu_ops.cpp,
    /// `nf4_lut` / `fp4_lut`, as fp32 literals), which `dequantize_4bit` uses whatever `quant_map`
    /// the file holds; bnb's torch fallback builds the same values from `get_4bit_type`.
    public enum FourBitType: String, CaseIterable, Sendable {
        case nf4
        case fp4

        public static var supportedList: String { allCases.map(\.rawValue).joined(separator: ", ") }

        /// Quantiles of N(0, 1) normalised to [-1, 1] (QLoRA), in code order.
        static let nf4Codes: [Float] = [
            -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
            -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
            0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
            0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
        ]
        /// Sign bit, 2 exponent bits, 1 mantissa bit, normalised by 12; code 8 is -0.0 in the C kernel.
        static let fp4Codes: [Float] = [
            0.0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25,
            -0.0, -0.005208333333, -0.66666667, -1.0, -0.33333333, -0.5, -0.16666667, -0.25,
        ]

        /// The table bnb's CPU `dequantize_4bit` multiplies by for a tensor of this last dimension.
        /// An odd last dimension takes bnb's torch fallback, whose FP4 table comes from a Python list
        /// where code 8 is the integer `-0`, so it holds +0.0: a different bit pattern for zeros.
        func codes(lastDimensionIsOdd: Bool) -> [Float] {
            switch self {
            case .nf4: return Self.nf4Codes
            case .fp4:
                guard lastDimensionIsOdd else { return Self.fp4Codes }
                var codes = Self.fp4Codes
                codes[8] = 0.0
                return codes
            }
        }
    }

    /// The name a quant state gives `dtype` (one `outputDType(named:)` accepts).
    static func outputDTypeName(_ dtype: DType) -> String {
        switch dtype {
        case .bf16: "bfloat16"
        case .f16: "float16"
        default: "float32"
        }
    }

    /// The output dtypes a quant state may name (`str(torch.dtype)` without "torch.").
    static func outputDType(named name: String) -> DType? {
        switch name {
        case "float32": .f32
        case "bfloat16": .bf16
        case "float16": .f16
        default: nil
        }
    }
}
