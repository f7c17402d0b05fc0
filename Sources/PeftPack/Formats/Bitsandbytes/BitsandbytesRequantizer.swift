/// A quantized weight's stored tensors rebuilt from new fp32 values, as bitsandbytes does when PEFT
/// merges into a `Linear4bit` / `Linear8bitLt` (`Params4bit(w)` / `Int8Params(w)` re-quantize the
/// merged weight with the layer's own settings) and `save_pretrained` then stores it: same names,
/// dtypes and shapes as the base's; the code tables (quant_map, nested_quant_map) and weight_format
/// are the base's bytes; the quant state JSON is written as `QuantState.as_dict(packed=True)`
/// serialises it, with the new nested offset.
enum BitsandbytesRequantizer {
    static func tensors(for layout: QuantizedWeightLayout, values: [Float], stored: Checkpoint) throws -> [(String, HostTensor)] {
        switch layout {
        case .fourBit(let weight): try fourBit(weight, values: values, stored: stored)
        case .int8(let weight): try int8(weight, values: values, stored: stored)
        }
    }

    private static func fourBit(_ weight: QuantizedWeightLayout.FourBit, values: [Float], stored: Checkpoint) throws -> [(String, HostTensor)] {
        let state = weight.state
        let nestedCode = try weight.nestedQuantMap.map { try stored.tensor($0).floats() }
        let quantized = FourBitQuantizer.quantize(values, blocksize: state.blocksize, type: state.quantType, nestedCode: nestedCode)
        let packedInfo = stored.info(weight.name)!
        var tensors: [(String, HostTensor)] = [
            (weight.name, HostTensor(dtype: .u8, shape: packedInfo.shape, bytes: quantized.packed)),
            (weight.quantMap, try stored.tensor(weight.quantMap)),
        ]
        var offset: Float?
        switch quantized.absmax {
        case .plain(let absmax):
            tensors.append((weight.absmax, HostTensor(floats: absmax, shape: [absmax.count], dtype: .f32)))
        case .nested(let codes, let nestedAbsmax, let nestedOffset):
            tensors.append((weight.absmax, HostTensor(dtype: .u8, shape: [codes.count], bytes: codes)))
            tensors.append((weight.nestedAbsmax!, HostTensor(floats: nestedAbsmax, shape: [nestedAbsmax.count], dtype: .f32)))
            tensors.append((weight.nestedQuantMap!, try stored.tensor(weight.nestedQuantMap!)))
            offset = nestedOffset
        }
        let json = Array(quantStateJSON(state, offset: offset).utf8)
        tensors.append((weight.stateName, HostTensor(dtype: .u8, shape: [json.count], bytes: json)))
        return tensors
    }

    private static func int8(_ weight: QuantizedWeightLayout.Int8, values: [Float], stored: Checkpoint) throws -> [(String, HostTensor)] {
        let quantized = Int8Quantizer.quantize(values, columns: weight.columns)
        var tensors: [(String, HostTensor)] = [
            (weight.name, HostTensor(dtype: .i8, shape: [weight.rows, weight.columns], bytes: quantized.codes.map { UInt8(bitPattern: $0) })),
            (weight.scales, HostTensor(floats: quantized.scales, shape: [weight.rows], dtype: .f32)),
        ]
        if let format = weight.weightFormat { tensors.append((format, try stored.tensor(format))) }
        return tensors
    }

    /// `json.dumps(QuantState.as_dict(packed=True))`: its key order and separators, the offset as
    /// Python prints the fp32 value widened to a double (the shortest repr, as Swift's).
    static func quantStateJSON(_ state: FourBitQuantState, offset: Float?) -> String {
        let dtype = BitsandbytesFormat.outputDTypeName(state.dtype)
        var members = [
            "\"quant_type\": \"\(state.quantType.rawValue)\"", "\"blocksize\": \(state.blocksize)", "\"dtype\": \"\(dtype)\"",
            "\"shape\": [\(state.shape.map(String.init).joined(separator: ", "))]",
        ]
        if let nested = state.nested, let offset {
            members += ["\"nested_blocksize\": \(nested.blocksize)", "\"nested_dtype\": \"float32\"", "\"nested_offset\": \(Double(offset))"]
        }
        return "{" + members.joined(separator: ", ") + "}"
    }
}
