/// The JSON quant state bitsandbytes packs into `<module>.weight.quant_state.bitsandbytes__<type>`
/// (`QuantState.as_dict(packed=True)`): the logical shape and dtype, the block size, the quant type
/// and, with double quantization, the nested block size, dtype and offset. Parsed strictly, as
/// `QuantState.from_dict` reads it, and checked before any size it claims is used.
struct FourBitQuantState: Equatable {
    struct Nested: Equatable {
        /// Absmax values per block of the nested 8-bit quantization (bnb writes 256).
        var blocksize: Int
        /// The mean of the absmax values, subtracted before they were quantized.
        var offset: Float
    }

    var quantType: BitsandbytesFormat.FourBitType
    var blocksize: Int
    var dtype: DType
    var shape: [Int]
    var elementCount: Int
    var nested: Nested?

    /// Blocks of `blocksize` elements, the last one partial when the count is not a multiple.
    var blockCount: Int { elementCount / blocksize + (elementCount % blocksize == 0 ? 0 : 1) }
    /// Bytes of the packed weight: two codes per byte, the first element in the high nibble.
    var packedByteCount: Int { elementCount / 2 + elementCount % 2 }

    /// `typeInName` is the `<type>` of the tensor's name, which must agree with the JSON's quant_type.
    init(json bytes: [UInt8], typeInName: String, nested isNested: Bool, fail: (String) -> InputError) throws {
        guard let nameType = BitsandbytesFormat.FourBitType(rawValue: typeInName) else {
            throw fail("unsupported 4-bit quant type \(typeInName); supported: \(BitsandbytesFormat.FourBitType.supportedList)")
        }
        let json: StrictJSON
        do {
            json = try StrictJSON.parse(bytes)
        } catch {
            throw fail("quant state is not valid JSON: \(error)")
        }
        guard let members = json.objectMembers else { throw fail("quant state is not a JSON object") }
        for (key, _) in members where !BitsandbytesFormat.quantStateKeys.contains(key) {
            throw fail("quant state has unknown key \(key)")
        }
        guard let typeName = json["quant_type"]?.stringValue else { throw fail("quant state has no quant_type string") }
        guard let type = BitsandbytesFormat.FourBitType(rawValue: typeName) else {
            throw fail("unsupported 4-bit quant type \(typeName); supported: \(BitsandbytesFormat.FourBitType.supportedList)")
        }
        guard type == nameType else { throw fail("quant state says quant_type \(typeName) but its name says \(typeInName)") }
        guard let blocksize = json["blocksize"]?.integerValue.map(Int.init), BitsandbytesFormat.blocksizes.contains(blocksize) else {
            throw fail("quant state blocksize is not one of \(BitsandbytesFormat.blocksizes.sorted().map(String.init).joined(separator: ", "))")
        }
        guard let dtypeName = json["dtype"]?.stringValue, let dtype = BitsandbytesFormat.outputDType(named: dtypeName) else {
            throw fail("quant state dtype is not float32, bfloat16 or float16")
        }
        guard let dimensions = json["shape"]?.arrayValue, !dimensions.isEmpty else {
            throw fail("quant state shape is not a non-empty list of dimensions")
        }
        var shape: [Int] = []
        for dimension in dimensions {
            guard let value = dimension.integerValue, value >= 0, value <= Int64(Int.max) else {
                throw fail("quant state shape has a dimension that is not a non-negative integer")
            }
            shape.append(Int(value))
        }
        guard let count = Shape.elementCount(shape) else { throw fail("quant state shape \(Shape.describe(shape)) overflows") }
        quantType = type
        self.blocksize = blocksize
        self.dtype = dtype
        self.shape = shape
        elementCount = count
        nested = isNested ? try Self.nestedState(json, fail: fail) : nil
    }

    private static func nestedState(_ json: StrictJSON, fail: (String) -> InputError) throws -> Nested {
        guard let blocksize = json["nested_blocksize"]?.integerValue, blocksize > 0, blocksize <= Int64(Int32.max) else {
            throw fail("quant state has nested tensors but no positive nested_blocksize")
        }
        guard json["nested_dtype"]?.stringValue == "float32" else {
            throw fail("quant state nested_dtype is not float32")
        }
        let offset: Double
        switch json["nested_offset"] {
        case .number(let value)?: offset = value
        case .integer(let value)?: offset = Double(value)
        default: throw fail("quant state has nested tensors but no nested_offset number")
        }
        // bnb stores the fp32 offset through `.item()` and reads it back with torch.tensor(float(x)): fp32.
        let single = Float(offset)
        guard single.isFinite else { throw fail("quant state nested_offset is not a finite fp32 number") }
        return Nested(blocksize: Int(blocksize), offset: single)
    }
}
