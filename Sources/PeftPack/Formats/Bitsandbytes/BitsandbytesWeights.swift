/// A checkpoint folder saved by transformers from a bitsandbytes-quantized model, presented as its
/// logical tensors: each quantized `weight` under its own name with its logical shape and dtype
/// (the quant state's for 4-bit, fp32 for LLM.int8) and bitsandbytes' dequantized values; the
/// companions (`.absmax`, `.quant_map`, `.nested_*`, `.quant_state.*`, `.SCB`, `.weight_format`)
/// hidden. Every other tensor passes through unchanged. Values are dequantized when read, a range
/// at a time, so a model is never held dequantized in memory.
public final class BitsandbytesWeights: DecodedWeights, @unchecked Sendable {
    public let checkpoint: Checkpoint
    public let names: [String]
    private let visible: Set<String>
    private let layouts: [String: QuantizedWeightLayout]

    /// Whether the checkpoint holds any bitsandbytes-quantized weight (a quant state or SCB tensor).
    public static func isQuantized(_ checkpoint: Checkpoint) -> Bool {
        checkpoint.storedNames.contains { isQuantStateName($0) || $0.hasSuffix(BitsandbytesFormat.int8ScalesSuffix) }
    }

    public init(checkpoint opened: Checkpoint) throws {
        let checkpoint = opened.stored
        self.checkpoint = checkpoint
        var layouts: [String: QuantizedWeightLayout] = [:]
        for name in checkpoint.storedNames {
            let layout: QuantizedWeightLayout
            if Self.isQuantStateName(name) {
                layout = try .fourBit(stateName: name, in: checkpoint)
            } else if name.hasSuffix(BitsandbytesFormat.int8ScalesSuffix) {
                layout = try .int8(scalesName: name, in: checkpoint)
            } else {
                continue
            }
            guard layouts[layout.name] == nil else {
                throw InputError(file: checkpoint.folder, tensor: layout.name, problem: "has two bitsandbytes quant states")
            }
            layouts[layout.name] = layout
        }
        var hidden = Set(layouts.values.flatMap(\.companions))
        for name in checkpoint.storedNames where Self.isQuantStateName(name) { hidden.insert(name) }
        for name in checkpoint.storedNames where !hidden.contains(name) && layouts[name] == nil && Self.looksLikeCompanion(name) {
            let file = checkpoint.shardOf(name).map { checkpoint.folder + "/" + $0 } ?? checkpoint.folder
            throw InputError(file: file, tensor: name, problem: "is a bitsandbytes companion tensor without the quant state or SCB of its weight")
        }
        self.layouts = layouts
        names = checkpoint.storedNames.filter { !hidden.contains($0) }
        visible = Set(names)
    }

    /// The weights stored quantized.
    public var quantizedNames: [String] { layouts.keys.sorted() }
    public var decodedNames: [String] { quantizedNames }
    public var storageFormat: String { "bitsandbytes" }
    public var configText: String? { nil }
    public var storedBytes: Int { checkpoint.storedNames.reduce(0) { $0 + (checkpoint.info($1)?.byteCount ?? 0) } }

    /// How each quantized weight is stored: "nf4", "fp4" (with "+double quant" when its absmax is
    /// itself quantized) or "int8", with how many weights each.
    public var storageKinds: [String: Int] {
        var kinds: [String: Int] = [:]
        for layout in layouts.values {
            switch layout {
            case .fourBit(let weight): kinds[weight.state.quantType.rawValue + (weight.nestedAbsmax == nil ? "" : "+double quant"), default: 0] += 1
            case .int8: kinds["int8", default: 0] += 1
            }
        }
        return kinds
    }

    /// The quantizations its weights use (nf4, fp4, int8).
    var quantTypeNames: Set<String> { Set(layouts.values.map(\.quantTypeName)) }

    /// How a quantized weight is stored (nil for any other tensor).
    func layout(_ name: String) -> QuantizedWeightLayout? { layouts[name] }

    public func tensorInfo(_ name: String) throws -> TensorInfo? {
        if let layout = layouts[name] { return layout.info }
        return visible.contains(name) ? checkpoint.info(name) : nil
    }

    public func tensor(_ name: String) throws -> HostTensor? {
        guard let layout = layouts[name] else {
            return visible.contains(name) ? try checkpoint.tensor(name) as HostTensor : nil
        }
        let info = layout.info
        let values = try Self.filled(count: info.elementCount!) { try products(layout, elements: 0..<$0.count, into: $0) }
        return HostTensor(floats: values, shape: info.shape, dtype: info.dtype)
    }

    public func widen(_ name: String, elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let layout = layouts[name] else {
            guard visible.contains(name) else { throw InputError(file: checkpoint.folder, tensor: name, problem: "no such tensor") }
            return try checkpoint.widen(name, elements: range, into: destination)
        }
        precondition(range.lowerBound >= 0 && range.upperBound <= layout.info.elementCount!, "element range outside \(name)")
        try products(layout, elements: range, into: destination)
        // The fp32 products are bnb's before its cast: round them to the output dtype as bnb does.
        let dtype = layout.info.dtype
        guard dtype != .f32 else { return }
        var narrowed = [UInt8](repeating: 0, count: range.count * dtype.byteSize)
        narrowed.withUnsafeMutableBytes { DTypeConversion.fromFloat32(UnsafeBufferPointer(destination), to: dtype, into: $0) }
        narrowed.withUnsafeBytes { DTypeConversion.toFloat32($0, dtype: dtype, into: destination) }
    }

    /// bnb's fp32 values before any cast to the output dtype.
    private func products(_ layout: QuantizedWeightLayout, elements range: Range<Int>,
                          into destination: UnsafeMutableBufferPointer<Float>) throws {
        try Self.products(layout, elements: range, into: destination, from: StoredBytes.checkpoint(checkpoint))
    }

    /// Where a quantized weight's stored tensors are read from: the checkpoint, or tensors just
    /// made by requantizing (`requantized`).
    private enum StoredBytes {
        case checkpoint(Checkpoint)
        case tensors([String: HostTensor])

        func with<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
            switch self {
            case .checkpoint(let checkpoint): return try checkpoint.withBytes(name, body)
            case .tensors(let tensors): return try tensors[name]!.bytes.withUnsafeBytes(body)
            }
        }
    }

    private static func products(_ layout: QuantizedWeightLayout, elements range: Range<Int>,
                                 into destination: UnsafeMutableBufferPointer<Float>, from source: StoredBytes) throws {
        switch layout {
        case .fourBit(let weight):
            let scales = try blockScales(weight, blocks: FourBitDequantizer.blocks(of: range, blocksize: weight.state.blocksize), from: source)
            try source.with(weight.name) { packed in
                FourBitDequantizer.products(packed: packed, scales: scales, state: weight.state, elements: range, into: destination)
            }
        case .int8(let weight):
            try source.with(weight.name) { codes in
                try source.with(weight.scales) { scales in
                    Int8Dequantizer.values(codes: codes, scales: scales, columns: weight.columns, elements: range, into: destination)
                }
            }
        }
    }

    private static func blockScales(_ weight: QuantizedWeightLayout.FourBit, blocks: Range<Int>, from source: StoredBytes) throws -> [Float] {
        guard let nested = weight.state.nested, let nestedAbsmax = weight.nestedAbsmax, let nestedCode = weight.nestedQuantMap else {
            return try source.with(weight.absmax) { FourBitDequantizer.plainScales($0, blocks: blocks) }
        }
        return try source.with(weight.absmax) { codes in
            try source.with(nestedCode) { code in
                try source.with(nestedAbsmax) { absmax in
                    FourBitDequantizer.nestedScales(codes: codes, nestedCode: code, nestedAbsmax: absmax, nested: nested, blocks: blocks)
                }
            }
        }
    }

    public func quantizedType(_ name: String) -> String? { layouts[name]?.quantTypeName }

    /// `values` requantized as bitsandbytes stores `name` (BitsandbytesRequantizer) and read back
    /// as its dequantized values are; nil for a tensor stored unquantized.
    public func requantized(_ name: String, values: [Float]) throws -> [Float]? {
        guard let layout = layouts[name] else { return nil }
        return try dequantized(name, from: BitsandbytesRequantizer.tensors(for: layout, values: values, stored: checkpoint))
    }

    /// The values of quantized weight `name` as this checkpoint's reader would give them were its
    /// stored tensors `tensors` (a requantization's, held in memory).
    func dequantized(_ name: String, from tensors: [(String, HostTensor)]) throws -> [Float] {
        var layout = layouts[name]!
        // The quant state is the new one (a requantization moves the nested offset), as a reader
        // of the written tensors parses it.
        if case .fourBit(var weight) = layout, let json = tensors.first(where: { $0.0 == weight.stateName })?.1.bytes {
            weight.state = try FourBitQuantState(json: json, typeInName: weight.state.quantType.rawValue, nested: weight.state.nested != nil) {
                InputError(file: self.checkpoint.folder, tensor: weight.stateName, problem: $0)
            }
            layout = .fourBit(weight)
        }
        let count = layout.info.elementCount!
        let stored = StoredBytes.tensors(Dictionary(tensors, uniquingKeysWith: { first, _ in first }))
        let result = try Self.filled(count: count) { try Self.products(layout, elements: 0..<count, into: $0, from: stored) }
        let dtype = layout.info.dtype
        guard dtype != .f32 else { return result }
        return HostTensor(floats: result, shape: [result.count], dtype: dtype).floats()
    }

    /// An array every element of which `fill` writes: not zeroed first (a weight-sized memset
    /// is as slow as the dequantization that overwrites it).
    private static func filled(count: Int, _ fill: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows -> [Float] {
        try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try fill(UnsafeMutableBufferPointer(rebasing: buffer[0..<count]))
            initialized = count
        }
    }

    private static func isQuantStateName(_ name: String) -> Bool {
        name.contains(BitsandbytesFormat.quantStateInfix)
    }

    /// A name bnb only writes beside a quantized weight, so one left unclaimed is a damaged file.
    private static func looksLikeCompanion(_ name: String) -> Bool {
        let fourBit = [BitsandbytesFormat.absmaxSuffix, BitsandbytesFormat.quantMapSuffix,
                       BitsandbytesFormat.nestedAbsmaxSuffix, BitsandbytesFormat.nestedQuantMapSuffix].map { ".weight" + $0 }
        return fourBit.contains(where: name.hasSuffix) || name.hasSuffix(BitsandbytesFormat.int8WeightFormatSuffix)
    }
}
