import Foundation

/// The adapters a command applies, chosen from packs, each with its weight: what merge, stack and
/// verify work on. Each input names a pack and one of its adapters, or none for all of them. The
/// refusals choosing implies are stated here once: a weight that is not a finite number, a name
/// the pack does not have, a name given twice, and (for merge and stack) every weight 0.
public struct SelectedAdapters {
    /// One input pack, opened once.
    public struct Pack {
        public let path: String
        public let reader: PackReader
        public let document: PackDocument

        /// Shapes of the pack's tensors by name.
        public func shape(_ name: String) -> [Int]? { shapes[name] }
        private let shapes: [String: [Int]]

        init(path: String) throws {
            self.path = path
            reader = try PackReader(path: path)
            document = try reader.adapterDocument()
            shapes = Dictionary(reader.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
        }
    }

    /// One chosen adapter: its weight and the input (index into `packs`) it comes from.
    public struct Entry {
        public var adapter: Adapter
        public var weight: Double
        public var pack: Int
    }

    /// The inputs' packs, one per input, in order.
    public let packs: [Pack]
    /// The chosen adapters, input by input, each pack's in its own order.
    public var entries: [Entry]

    /// Merge and stack: every input `PACK` (all its adapters) or `PACK:ADAPTER`, at its weight.
    /// `allZeroWeights`: the refusal when every weight is 0 (what that would make), nil to allow it.
    public init(_ inputs: [MergeInput], allZeroWeights: String?) throws {
        for input in inputs { try FiniteValues.checkWeight(input.weight, of: input.pack) }
        // Every term of every adapter kind is scaled by its weight (DoRA and IA3 interpolate
        // from W), so all-zero weights change nothing.
        if let allZeroWeights, !inputs.isEmpty, inputs.allSatisfy({ $0.weight == 0 }) {
            throw InputError(file: inputs.map(\.pack).joined(separator: ", "), problem: allZeroWeights, kind: .allWeightsZero)
        }
        var packs: [Pack] = []
        var entries: [Entry] = []
        for (index, input) in inputs.enumerated() {
            let pack = try Pack(path: input.pack)
            let chosen = try input.adapter.map { [try Self.adapter(named: $0, in: pack.document, file: input.pack)] } ?? pack.document.adapters
            entries += chosen.map { Entry(adapter: $0, weight: input.weight, pack: index) }
            packs.append(pack)
        }
        self.packs = packs
        self.entries = entries
    }

    /// Verify: the adapters of one pack named in `names` (none: every adapter), each once, at weight 1.
    public init(pack path: String, names: [String]) throws {
        let pack = try Pack(path: path)
        if let twice = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw InputError(file: path, problem: "adapter \(twice) is chosen twice", kind: .duplicateName)
        }
        let chosen = try names.isEmpty ? pack.document.adapters : names.map { try Self.adapter(named: $0, in: pack.document, file: path) }
        packs = [pack]
        entries = chosen.map { Entry(adapter: $0, weight: 1, pack: 0) }
    }

    /// The adapters, in order.
    public var adapters: [Adapter] { entries.map(\.adapter) }

    /// The adapter of a document named `name`; with no name, its only adapter.
    public static func adapter(named name: String?, in document: PackDocument, file: String) throws -> Adapter {
        if let name {
            guard let adapter = document.adapter(named: name) else {
                throw InputError(file: file, problem: "has no adapter named \(name) (it has: \(document.adapters.map(\.name).joined(separator: ", ")))", kind: .noSuchAdapter)
            }
            return adapter
        }
        guard document.adapters.count == 1 else {
            throw InputError(file: file, problem: "holds \(document.adapters.count) adapters (\(document.adapters.map(\.name).joined(separator: ", ")))", kind: .severalAdapters)
        }
        return document.adapters[0]
    }
}
