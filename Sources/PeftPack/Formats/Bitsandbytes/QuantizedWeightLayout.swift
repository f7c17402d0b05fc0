/// One quantized Linear weight of a bitsandbytes checkpoint: which stored tensors make it up, and
/// its logical identity. Built only after every companion's dtype and size has been checked
/// against the quant state, so dequantization never reads past a tensor or trusts a claimed size.
enum QuantizedWeightLayout {
    case fourBit(FourBit)
    case int8(Int8)

    struct FourBit {
        var name: String
        var state: FourBitQuantState
        var absmax: String
        var quantMap: String
        /// With double quantization: the fp32 absmax of the absmax codes and their 256-entry code.
        var nestedAbsmax: String?
        var nestedQuantMap: String?

        var companions: [String] {
            [absmax, quantMap, nestedAbsmax, nestedQuantMap].compactMap { $0 }
        }

        var stateName: String { name + BitsandbytesFormat.quantStateInfix + state.quantType.rawValue }
    }

    struct Int8 {
        var name: String
        var scales: String
        var weightFormat: String?
        var rows: Int
        var columns: Int
    }

    var name: String {
        switch self {
        case .fourBit(let weight): weight.name
        case .int8(let weight): weight.name
        }
    }

    /// bitsandbytes' name of the quantization (nf4, fp4, int8).
    var quantTypeName: String {
        switch self {
        case .fourBit(let weight): weight.state.quantType.rawValue
        case .int8: "int8"
        }
    }

    var info: TensorInfo {
        switch self {
        case .fourBit(let weight): TensorInfo(name: weight.name, dtype: weight.state.dtype, shape: weight.state.shape)
        case .int8(let weight): TensorInfo(name: weight.name, dtype: .f32, shape: [weight.rows, weight.columns])
        }
    }

    /// Every stored tensor this weight accounts for, besides `name` itself.
    var companions: [String] {
        switch self {
        case .fourBit(let weight): weight.companions
        case .int8(let weight): [weight.scales, weight.weightFormat].compactMap { $0 }
        }
    }
}

extension QuantizedWeightLayout {
    /// Reads and checks the 4-bit weight whose quant state tensor is `stateName`.
    static func fourBit(stateName: String, in checkpoint: Checkpoint) throws -> QuantizedWeightLayout {
        let range = stateName.range(of: BitsandbytesFormat.quantStateInfix, options: .backwards)!
        let name = String(stateName[..<range.lowerBound])
        let typeInName = String(stateName[range.upperBound...])
        let check = LayoutCheck(checkpoint: checkpoint, weight: name)
        let stateInfo = try check.info(stateName, role: "quant state")
        guard stateInfo.dtype == .u8, stateInfo.shape.count == 1 else {
            throw check.error("quant state \(stateName) is \(stateInfo.dtype) \(Shape.describe(stateInfo.shape)), not a U8 list of JSON bytes")
        }
        let nestedAbsmax = name + BitsandbytesFormat.nestedAbsmaxSuffix
        let nestedQuantMap = name + BitsandbytesFormat.nestedQuantMapSuffix
        let isNested = checkpoint.info(nestedAbsmax) != nil
        let state = try FourBitQuantState(json: try checkpoint.tensor(stateName).bytes, typeInName: typeInName,
                                          nested: isNested, fail: check.error)
        let packed = try check.info(name, role: "packed weight")
        guard packed.dtype == .u8 else {
            throw check.error("packed weight is \(packed.dtype); only uint8 quant storage is read")
        }
        guard packed.elementCount == state.packedByteCount else {
            throw check.error("packed weight holds \(packed.elementCount ?? 0) bytes but quant state shape \(Shape.describe(state.shape)) needs \(state.packedByteCount)")
        }
        let absmax = name + BitsandbytesFormat.absmaxSuffix
        try check.expect(absmax, role: "absmax", dtype: isNested ? .u8 : .f32, count: state.blockCount,
                         reason: "\(state.blockCount) blocks of \(state.blocksize)")
        let quantMap = name + BitsandbytesFormat.quantMapSuffix
        try check.expect(quantMap, role: "quant_map", dtype: .f32, count: 16, reason: "a 4-bit code")
        let stored = try checkpoint.tensor(quantMap).floats()
        // bnb dequantizes with its built-in table whatever quant_map says; a different map means
        // the file was not made by the bnb this reader follows. Compared by value: the stored FP4
        // map (from get_4bit_type) has +0.0 where the C kernel's table has -0.0.
        guard stored == state.quantType.codes(lastDimensionIsOdd: false) else {
            throw check.error("quant_map is not bitsandbytes' \(state.quantType.rawValue) table")
        }
        var weight = QuantizedWeightLayout.FourBit(name: name, state: state, absmax: absmax, quantMap: quantMap)
        if let nested = state.nested {
            let nestedBlocks = state.blockCount / nested.blocksize + (state.blockCount % nested.blocksize == 0 ? 0 : 1)
            try check.expect(nestedAbsmax, role: "nested_absmax", dtype: .f32, count: nestedBlocks,
                             reason: "\(state.blockCount) absmax values in blocks of \(nested.blocksize)")
            try check.expect(nestedQuantMap, role: "nested_quant_map", dtype: .f32, count: BitsandbytesFormat.nestedCodeCount,
                             reason: "an 8-bit code")
            weight.nestedAbsmax = nestedAbsmax
            weight.nestedQuantMap = nestedQuantMap
        } else if checkpoint.info(nestedQuantMap) != nil {
            throw check.error("has nested_quant_map but no nested_absmax")
        }
        return .fourBit(weight)
    }

    /// Reads and checks the LLM.int8 weight whose row scales are `scalesName` (`<module>.SCB`).
    static func int8(scalesName: String, in checkpoint: Checkpoint) throws -> QuantizedWeightLayout {
        let module = String(scalesName.dropLast(BitsandbytesFormat.int8ScalesSuffix.count))
        let name = module + ".weight"
        let check = LayoutCheck(checkpoint: checkpoint, weight: name)
        let codes = try check.info(name, role: "int8 weight")
        guard codes.dtype == .i8, codes.shape.count == 2 else {
            throw check.error("int8 weight is \(codes.dtype) \(Shape.describe(codes.shape)), not a 2-D I8 matrix")
        }
        try check.expect(scalesName, role: "SCB", dtype: .f32, count: codes.shape[0], reason: "one scale per row")
        let formatName = module + BitsandbytesFormat.int8WeightFormatSuffix
        var weightFormat: String?
        if let format = checkpoint.info(formatName) {
            guard format.dtype == .u8, format.elementCount == 1,
                  try checkpoint.tensor(formatName).bytes[0] == BitsandbytesFormat.int8RowMajorFormat else {
                throw check.error("weight_format is not 0 (row-major), the only layout bitsandbytes loads")
            }
            weightFormat = formatName
        }
        return .int8(Int8(name: name, scales: scalesName, weightFormat: weightFormat,
                          rows: codes.shape[0], columns: codes.shape[1]))
    }
}

/// Errors naming the file and the logical weight, and the companion checks they come from.
private struct LayoutCheck {
    let checkpoint: Checkpoint
    let weight: String

    func error(_ problem: String) -> InputError {
        let file = checkpoint.shardOf(weight).map { checkpoint.folder + "/" + $0 } ?? checkpoint.folder
        return InputError(file: file, tensor: weight, problem: problem)
    }

    func info(_ name: String, role: String) throws -> TensorInfo {
        guard let info = checkpoint.info(name) else { throw error("bitsandbytes \(role) \(name) is missing") }
        return info
    }

    func expect(_ name: String, role: String, dtype: DType, count: Int, reason: String) throws {
        let found = try info(name, role: role)
        guard found.dtype == dtype else { throw error("\(role) is \(found.dtype), expected \(dtype)") }
        guard found.elementCount == count else {
            throw error("\(role) holds \(found.elementCount ?? 0) values, expected \(count) (\(reason))")
        }
    }
}
