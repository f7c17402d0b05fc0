import Foundation

/// An MLX model folder quantized by `mlx_lm.convert -q` (config.json's `quantization` entry),
/// presented as its logical tensors: each quantized `<module>.weight` (packed uint32 codes) under
/// its own name with its logical shape and mx.dequantize's values — an affine layer in the dtype
/// of its scales (AffineQuantizer), a float-mode one (mxfp4, mxfp8, nvfp4: uint8 scales, no
/// biases) in bf16, mx.dequantize's default and what mlx-lm dequantizes and fuses them to
/// (FloatBlockQuantizer); the `.scales` and `.biases` companions hidden. Every other tensor —
/// layers mlx-lm left unquantized included — passes through unchanged.
public final class MLXQuantizedWeights: DecodedWeights, @unchecked Sendable {
    struct Layout {
        var name: String
        var scales: String
        /// Affine layers only.
        var biases: String?
        var parameters: MLXQuantization.Parameters
        var info: TensorInfo

        var companions: [String] { [scales] + (biases.map { [$0] } ?? []) }
        var typeName: String {
            parameters.mode.isFloat ? parameters.mode.rawValue : "affine q\(parameters.bits) g\(parameters.groupSize)"
        }
    }

    /// A layer's stored bytes: packed codes, scales, and an affine layer's biases.
    struct Quantized {
        var codes: [UInt8]
        var scales: [UInt8]
        var biases: [UInt8]?
    }

    /// The dtype mx.dequantize gives a float-mode layer when none is asked for.
    static let floatModeDType = DType.bf16

    static let scalesSuffix = ".scales"
    static let biasesSuffix = ".biases"
    static let globalScaleSuffix = ".global_scale"

    public let checkpoint: Checkpoint
    public let names: [String]
    private let visible: Set<String>
    private let layouts: [String: Layout]

    /// The `quantization` entry of the folder's config.json, nil when it has none.
    static func quantization(of checkpoint: Checkpoint) throws -> MLXQuantization? {
        let path = (checkpoint.folder as NSString).appendingPathComponent("config.json")
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return try MLXQuantization(configText: text, file: path)
    }

    init(checkpoint: Checkpoint, quantization: MLXQuantization) throws {
        self.checkpoint = checkpoint
        let config = (checkpoint.folder as NSString).appendingPathComponent("config.json")
        let stored = Set(checkpoint.storedNames)
        var layouts: [String: Layout] = [:]
        for scales in checkpoint.storedNames where scales.hasSuffix(Self.scalesSuffix) {
            let module = String(scales.dropLast(Self.scalesSuffix.count))
            let name = module + ".weight", biases = module + Self.biasesSuffix
            let file = checkpoint.shardOf(scales).map { checkpoint.folder + "/" + $0 } ?? checkpoint.folder
            guard let parameters = quantization.parameters(ofModule: module) else {
                throw InputError(file: file, tensor: scales, problem: "is stored but \(config) keeps \(module) unquantized (quantization.\(module) is false)")
            }
            let mode = parameters.mode
            guard stored.contains(name), mode.isFloat || stored.contains(biases) else {
                throw InputError(file: file, tensor: scales, problem: "has no \(stored.contains(name) ? biases : name) beside it (an affine-quantized MLX layer stores weight, scales and biases)")
            }
            if mode.isFloat, stored.contains(biases) {
                throw InputError(file: file, tensor: biases, problem: "is stored but \(config) quantizes \(module) as \(mode.rawValue), which has no biases")
            }
            // mlx-lm gives nvfp4 a per-tensor global scale on switch (expert) layers only; mlx's
            // graph then computes the product in fp32 rather than the output dtype.
            if stored.contains(module + Self.globalScaleSuffix) {
                throw InputError(file: file, tensor: module + Self.globalScaleSuffix, problem: "is stored: nvfp4 with a global scale (mlx-lm's switch layers) is not read", kind: .unsupportedTensorType)
            }
            layouts[name] = try Self.layout(name, scales: scales, biases: mode.isFloat ? nil : biases, parameters: parameters, in: checkpoint, file: file)
        }
        self.layouts = layouts
        let hidden = Set(layouts.values.flatMap(\.companions))
        names = checkpoint.storedNames.filter { !hidden.contains($0) }
        visible = Set(names)
    }

    /// Checks a quantized layer's stored shapes against its parameters, as mx.dequantize does.
    private static func layout(_ name: String, scales: String, biases: String?, parameters: MLXQuantization.Parameters,
                               in checkpoint: Checkpoint, file: String) throws -> Layout {
        let packed = checkpoint.info(name)!, scaleInfo = checkpoint.info(scales)!, biasInfo = biases.map { checkpoint.info($0)! }
        let mode = parameters.mode
        let described = mode.isFloat ? mode.rawValue : "q\(parameters.bits) g\(parameters.groupSize)"
        guard packed.dtype == .u32, packed.shape.count >= 2 else {
            throw InputError(file: file, tensor: name, problem: "is \(packed.dtype.rawValue) \(packed.shape) but a quantized MLX weight is packed uint32 of at least two dimensions")
        }
        if let biasInfo {
            guard [.f16, .bf16, .f32].contains(scaleInfo.dtype), biasInfo.dtype == scaleInfo.dtype else {
                throw InputError(file: file, tensor: scales, problem: "is \(scaleInfo.dtype.rawValue) with biases \(biasInfo.dtype.rawValue); MLX stores both in the weight's float dtype")
            }
        } else if scaleInfo.dtype != .u8 {
            throw InputError(file: file, tensor: scales, problem: "is \(scaleInfo.dtype.rawValue) but \(mode.rawValue) scales are uint8")
        }
        var logical = packed.shape
        logical[logical.count - 1] = packed.shape.last! * 32 / parameters.bits
        var groups = logical
        groups[groups.count - 1] = logical.last! / parameters.groupSize
        guard (packed.shape.last! * 32) % parameters.bits == 0, logical.last! % parameters.groupSize == 0 else {
            throw InputError(file: file, tensor: name, problem: "has \(packed.shape.last!) uint32 per row: \(packed.shape.last! * 32 / parameters.bits) elements at \(parameters.bits) bits, not whole groups of \(parameters.groupSize) (config.json's quantization for it is \(described))")
        }
        for companion in [scaleInfo] + (biasInfo.map { [$0] } ?? []) where companion.shape != groups {
            throw InputError(file: file, tensor: companion.name, problem: "has shape \(companion.shape) but \(name) \(packed.shape) at \(described) has \(groups) groups")
        }
        return Layout(name: name, scales: scales, biases: biases, parameters: parameters,
                      info: TensorInfo(name: name, dtype: mode.isFloat ? floatModeDType : scaleInfo.dtype, shape: logical))
    }

    public var decodedNames: [String] { layouts.keys.sorted() }
    public var storageFormat: String { "mlx" }
    public var configText: String? { nil }
    public var storedBytes: Int { checkpoint.storedNames.reduce(0) { $0 + (checkpoint.info($1)?.byteCount ?? 0) } }

    public var storageKinds: [String: Int] {
        layouts.values.reduce(into: [:]) { $0[$1.typeName, default: 0] += 1 }
    }

    func layout(_ name: String) -> Layout? { layouts[name] }

    public func tensorInfo(_ name: String) throws -> TensorInfo? {
        if let layout = layouts[name] { return layout.info }
        return visible.contains(name) ? checkpoint.info(name) : nil
    }

    public func tensor(_ name: String) throws -> HostTensor? {
        guard let layout = layouts[name] else {
            return visible.contains(name) ? try checkpoint.tensor(name) as HostTensor : nil
        }
        var values = [Float](repeating: 0, count: layout.info.elementCount!)
        try values.withUnsafeMutableBufferPointer { try widen(name, elements: 0..<$0.count, into: $0) }
        return HostTensor(floats: values, shape: layout.info.shape, dtype: layout.info.dtype)
    }

    public func widen(_ name: String, elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let layout = layouts[name] else {
            guard visible.contains(name) else { throw InputError(file: checkpoint.folder, tensor: name, problem: "no such tensor") }
            return try checkpoint.widen(name, elements: range, into: destination)
        }
        precondition(range.lowerBound >= 0 && range.upperBound <= layout.info.elementCount!, "element range outside \(name)")
        try checkpoint.withBytes(layout.name) { codes in
            try checkpoint.withBytes(layout.scales) { scales in
                guard let biases = layout.biases else {
                    return Self.dequantize(layout, codes: codes, scales: scales, biases: nil, elements: range, into: destination)
                }
                try checkpoint.withBytes(biases) { biases in
                    Self.dequantize(layout, codes: codes, scales: scales, biases: biases, elements: range, into: destination)
                }
            }
        }
    }

    private static func dequantize(_ layout: Layout, codes: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer, biases: UnsafeRawBufferPointer?,
                                   elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) {
        let parameters = layout.parameters
        if let biases {
            AffineQuantizer.dequantize(codes: codes, scales: scales, biases: biases, dtype: layout.info.dtype,
                                       groupSize: parameters.groupSize, bits: parameters.bits, elements: range, into: destination)
        } else {
            FloatBlockQuantizer.dequantize(codes: codes, scales: scales, mode: parameters.mode, dtype: layout.info.dtype,
                                           elements: range, into: destination)
        }
    }

    public func quantizedType(_ name: String) -> String? { layouts[name]?.typeName }

    /// `values` (fp32) quantized as mx.quantize does with the layer's own mode, group size and
    /// bits (affine scales and biases in its dtype): the packed codes, scales and biases.
    func quantized(_ name: String, values: [Float]) -> Quantized? {
        guard let layout = layouts[name] else { return nil }
        let parameters = layout.parameters
        return values.withUnsafeBufferPointer {
            if parameters.mode.isFloat {
                let (codes, scales) = FloatBlockQuantizer.quantize($0, mode: parameters.mode)
                return Quantized(codes: codes, scales: scales, biases: nil)
            }
            let (codes, scales, biases) = AffineQuantizer.quantize($0, dtype: layout.info.dtype, groupSize: parameters.groupSize, bits: parameters.bits)
            return Quantized(codes: codes, scales: scales, biases: biases)
        }
    }

    /// `values` requantized as `name` is stored and read back as mx.dequantize reads it.
    public func requantized(_ name: String, values: [Float]) throws -> [Float]? {
        guard let stored = quantized(name, values: values) else { return nil }
        return dequantized(name, from: stored)
    }

    /// What mx.dequantize reads from `stored` (a quantization of `name`'s values).
    func dequantized(_ name: String, from stored: Quantized) -> [Float] {
        let layout = layouts[name]!
        let count = layout.info.elementCount!
        var result = [Float](repeating: 0, count: count)
        stored.codes.withUnsafeBytes { codes in
            stored.scales.withUnsafeBytes { scales in
                result.withUnsafeMutableBufferPointer { destination in
                    guard let biases = stored.biases else {
                        return Self.dequantize(layout, codes: codes, scales: scales, biases: nil, elements: 0..<count, into: destination)
                    }
                    biases.withUnsafeBytes {
                        Self.dequantize(layout, codes: codes, scales: scales, biases: $0, elements: 0..<count, into: destination)
                    }
                }
            }
        }
        return result
    }
}
