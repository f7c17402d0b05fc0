import Foundation

/// Index of a model parameter in `ParameterStore`.
typealias ParameterID = Int

/// When a model's parameters become fp32.
public struct WeightResidency: Sendable, Equatable {
    /// The largest buffer one widening makes, in floats; nil when everything is widened at load.
    let tileFloats: Int?

    /// Read from the checkpoint in its stored dtype during each pass and widened a tensor at a
    /// time into a buffer freed after its use; a weight larger than a tile (an output head over a
    /// large vocabulary) is used in tiles of rows. Weight memory is about the largest matrix, not
    /// the model. 64 Mi floats (256 MB) keeps an 8B model's MLP matrices (14336 × 4096) whole
    /// and its 128256-row head in 9 tiles.
    public static let streamed = streamed(tileFloats: 64 << 20)

    /// Every parameter widened once at load and kept (the runtime before streaming): 4 bytes per
    /// parameter for the model's lifetime.
    public static let widenedAtLoad = WeightResidency(tileFloats: nil)

    static func streamed(tileFloats: Int) -> WeightResidency {
        precondition(tileFloats > 0)
        return WeightResidency(tileFloats: tileFloats)
    }
}

/// Counts the fp32 values widened from stored weights that are alive at once. Its high-water
/// mark is the runtime's weight memory, which the tests bound.
final class WideningMeter: @unchecked Sendable {
    private let lock = NSLock()
    private var live = 0
    private(set) var peakFloats = 0

    func acquire(_ count: Int) {
        lock.lock()
        defer { lock.unlock() }
        live += count
        peakFloats = max(peakFloats, live)
    }

    func release(_ count: Int) {
        lock.lock()
        defer { lock.unlock() }
        live -= count
    }
}

/// The parameters of a loaded model: their names, shapes and checkpoint keys, and their values
/// in the checkpoint's own dtype, widened to fp32 when used (`withValues`).
struct ParameterStore: @unchecked Sendable {
    /// Names as the runtime addresses them: without the base-model prefix ("bert.", "model.",
    /// "transformer."), e.g. "layers.0.self_attn.q_proj.weight" or "lm_head.weight".
    var names: [String] = []
    var shapes: [[Int]] = []
    /// The checkpoint tensor holding each parameter (a tied head's is the embedding's).
    var keys: [String] = []
    var idsByName: [String: ParameterID] = [:]
    /// Only for `.widenedAtLoad`: every parameter in fp32.
    private var widened: [[Float]] = []
    // The provider is only read, and the model that owns this store reads it from one pass at a time.
    let provider: any WeightProvider
    let residency: WeightResidency
    let meter = WideningMeter()

    init(provider: any WeightProvider, residency: WeightResidency) {
        self.provider = provider
        self.residency = residency
    }

    mutating func add(name: String, shape: [Int], key: String) throws -> ParameterID {
        if residency == .widenedAtLoad {
            let count = Shape.elementCount(shape) ?? 0
            var values = [Float](repeating: 0, count: count)
            try values.withUnsafeMutableBufferPointer { try provider.widen(key, elements: 0..<count, into: $0) }
            meter.acquire(count)
            widened.append(values)
        }
        return append(name: name, shape: shape, key: key)
    }

    /// A second name for parameter `id`, sharing its values.
    mutating func alias(_ name: String, of id: ParameterID) -> ParameterID {
        if residency == .widenedAtLoad { widened.append(widened[id]) }
        return append(name: name, shape: shapes[id], key: keys[id])
    }

    private mutating func append(name: String, shape: [Int], key: String) -> ParameterID {
        let id = names.count
        names.append(name)
        shapes.append(shape)
        keys.append(key)
        idsByName[name] = id
        return id
    }

    /// Rows of a matrix with rows of `width` values widened at once.
    func tileRows(width: Int) -> Int {
        max(1, (residency.tileFloats ?? Int.max) / max(width, 1))
    }

    /// Values per row of the first dimension (1 for a vector).
    func rowWidth(_ id: ParameterID) -> Int {
        shapes[id].count < 2 ? 1 : Shape.elementCount(Array(shapes[id].dropFirst())) ?? 0
    }

    /// Calls `body` with rows `rows` (all when nil) of a parameter in fp32. A streamed parameter
    /// is widened into a buffer that is freed when `body` returns.
    func withValues<R>(_ id: ParameterID, rows: Range<Int>? = nil, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        let width = rowWidth(id)
        let elements = rows.map { ($0.lowerBound * width)..<($0.upperBound * width) } ?? 0..<(Shape.elementCount(shapes[id]) ?? 0)
        if residency == .widenedAtLoad {
            return try widened[id].withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[elements])) }
        }
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: elements.count)
        meter.acquire(elements.count)
        defer {
            buffer.deallocate()
            meter.release(elements.count)
        }
        try provider.widen(keys[id], elements: elements, into: buffer)
        return try body(UnsafeBufferPointer(buffer))
    }

    /// A parameter's values as an array (for vectors and small tables, or adapters' set-up).
    func floats(_ id: ParameterID) throws -> [Float] {
        try withValues(id) { Array($0) }
    }
}

/// Reads the identity of the tensors a model expects from a checkpoint, strictly: each must exist
/// with the shape the config implies and a float dtype. Checkpoint keys may carry the base-model
/// prefix or not.
struct ModelWeightLoader {
    let provider: any WeightProvider
    let prefix: String
    private(set) var store: ParameterStore
    private var available: Set<String>
    private var consumed: Set<String> = []

    init(provider: any WeightProvider, prefix: String, residency: WeightResidency) {
        self.provider = provider
        self.prefix = prefix
        store = ParameterStore(provider: provider, residency: residency)
        available = Set(provider.names)
    }

    /// A parameter that must be present.
    mutating func require(_ name: String, _ shape: [Int], prefixed: Bool = true) throws -> ParameterID {
        guard let id = try load(name, shape, prefixed: prefixed) else {
            throw RuntimeError.missingWeight(name: displayName(name, prefixed: prefixed), expectedShape: shape)
        }
        return id
    }

    /// A parameter the architecture has only in some checkpoints (e.g. BERT's pooler).
    mutating func optional(_ name: String, _ shape: [Int], prefixed: Bool = true) throws -> ParameterID? {
        try load(name, shape, prefixed: prefixed)
    }

    /// A second name for an already loaded parameter whose storage it shares (a tied head);
    /// adapters may replace the alias without touching the original.
    mutating func alias(_ name: String, of id: ParameterID) -> ParameterID {
        store.alias(name, of: id)
    }

    /// Marks checkpoint keys the model knowingly ignores (buffers, a tied head's duplicate).
    mutating func ignore(where predicate: (String) -> Bool) {
        consumed.formUnion(available.filter(predicate))
    }

    /// Checkpoint tensors nothing consumed, sorted.
    var unused: [String] {
        available.subtracting(consumed).sorted()
    }

    private func candidates(_ name: String, prefixed: Bool) -> [String] {
        var names = prefixed ? ["\(prefix).\(name)", name] : [name]
        // Old BERT checkpoints name LayerNorm parameters gamma and beta; transformers renames them.
        if name.hasSuffix("LayerNorm.weight") || name.hasSuffix("LayerNorm.bias") {
            let legacy = name.hasSuffix(".weight")
                ? String(name.dropLast("weight".count)) + "gamma" : String(name.dropLast("bias".count)) + "beta"
            names += prefixed ? ["\(prefix).\(legacy)", legacy] : [legacy]
        }
        return names
    }

    private func displayName(_ name: String, prefixed: Bool) -> String {
        prefixed ? "\(name) (or \(prefix).\(name))" : name
    }

    private mutating func load(_ name: String, _ shape: [Int], prefixed: Bool) throws -> ParameterID? {
        guard let key = candidates(name, prefixed: prefixed).first(where: available.contains),
              let info = try provider.tensorInfo(key)
        else { return nil }
        guard info.shape == shape else {
            throw RuntimeError.weightShape(name: key, shape: info.shape, expected: shape)
        }
        guard info.dtype.isFloatingPoint else { throw RuntimeError.weightDType(name: key, dtype: info.dtype) }
        consumed.insert(key)
        return try store.add(name: name, shape: shape, key: key)
    }
}
