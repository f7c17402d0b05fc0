import Foundation

/// How closely a base must match what a pack recorded of the base its adapters were made for.
public enum BaseCheckLevel: String, Sendable, Encodable {
    /// Names, dtypes and shapes, and the bytes of every tensor whose hash was recorded.
    case content
    /// Names, dtypes and shapes only: no tensor is hashed.
    case shapes
    /// Names, dtypes, shapes and recorded content are compared and every difference is reported,
    /// none refused.
    case skipped
}

/// A base that is not the one a pack was made for.
public struct BaseMismatchError: UserFacingError {
    public enum Kind: String, Sendable {
        /// A targeted tensor holds other values: another checkpoint of the same architecture.
        case content
        /// A targeted tensor has another shape.
        case shape
        /// A pack from before per-tensor records: its one fingerprint over every adapter's targets differs.
        case fingerprint
        /// Two adapters to put in one pack were made for different bases.
        case differentBases
    }

    public var kind: Kind
    public var file: String
    public var tensor: String?
    public var problem: String

    public var description: String { "\(file): \(problem)" }
}

/// Checks the base a command was given against what packs recorded of theirs (spec §9.2): per
/// targeted tensor its dtype and shape (`tensors`) and the XXH3 of its bytes (`content_hashes`),
/// or, for packs written before format 1.1, one fingerprint over every adapter's targets.
///
/// Only the tensors the chosen adapters target are compared, so one adapter of a pack checks as
/// well as all of them. Content is compared as the caller reads each tensor (`checkContent`),
/// so merge hashes bytes it reads anyway, at memory speed.
public final class BaseBinding {
    public struct Report: Encodable {
        public var level: BaseCheckLevel
        /// Targeted tensors whose dtype and shape were compared with a record.
        public var tensorsCompared: Int
        /// Targeted tensors whose bytes were compared with a recorded hash.
        public var contentCompared: Int
        public var warnings: [String]
    }

    public let base: BaseModel
    public let level: BaseCheckLevel
    private var compared = Set<String>()
    private var contentCompared = 0
    private var warnings: [String] = []
    /// Tensors whose bytes differ from a recorded hash at level `.skipped`, per pack file.
    private var contentDifferences: [(file: String, tensor: String)] = []
    /// Tensor name → the hashes packs recorded for it, not compared yet.
    private var pendingContent: [String: [(hash: String, file: String)]] = [:]

    public init(base: BaseModel, level: BaseCheckLevel) {
        self.base = base
        self.level = level
    }

    public var report: Report {
        Report(level: level, tensorsCompared: compared.count, contentCompared: contentCompared,
               warnings: warnings + contentDifferenceWarnings)
    }

    /// One warning per pack for the tensors that hold other values (a wrong base differs in all of them).
    private var contentDifferenceWarnings: [String] {
        var files: [String] = []
        var tensors: [String: [String]] = [:]
        // A pack given twice (verify --against itself) records each tensor twice.
        for (file, tensor) in contentDifferences where tensors[file]?.contains(tensor) != true {
            if tensors[file] == nil { files.append(file) }
            tensors[file, default: []].append(tensor)
        }
        return files.map { file in
            let names = tensors[file]!
            let what = names.count == 1 ? "\(names[0]) holds" : "\(names.count) targeted tensors (first \(names[0])) hold"
            return "\(file): was made for a base whose \(what) other values than \(base.folder)'s: it is another checkpoint of this architecture (used anyway)"
        }
    }

    /// Tensors still to hash, in checkpoint order.
    public var pendingTensors: [String] { base.checkpoint.names.filter { pendingContent[$0] != nil } }

    /// Compares what one pack recorded with this base for `targets`, the base tensors the chosen
    /// adapters change (`all`: every adapter of the pack, over which a pre-1.1 fingerprint was
    /// computed).
    public func add(_ record: BaseModelIdentity?, targets: [String], all: [Adapter], shapes: (String) -> [Int]?, file: String) throws {
        guard let record else { return }
        // A tied head is bound through the embedding whose bytes it is.
        let targeted = base.checkpoint.names.filter(Set(targets.map(base.storedName)).contains)
        var comparable = targeted
        if let tensors = record.tensors {
            comparable = []
            var converted: [(name: String, recorded: String, here: DType)] = []
            defer { warnAboutConversion(converted, file: file) }
            for name in targeted {
                guard let recorded = tensors[name], let info = base.checkpoint.info(name) else { continue }
                compared.insert(name)
                if recorded.shape != info.shape {
                    try refuse(.shape, file: file, tensor: name, "was made for a base whose \(name) is \(Shape.describe(recorded.shape)), but \(base.folder) has \(Shape.describe(info.shape))")
                } else if recorded.dtype != info.dtype.rawValue {
                    converted.append((name, recorded.dtype, info.dtype))
                } else {
                    comparable.append(name)
                }
            }
        } else if let fingerprint = record.fingerprint {
            comparable = try compareLegacy(fingerprint, targeted: targeted, all: all, shapes: shapes, file: file)
        }
        // Skipping the check still compares content: a same-shaped wrong base is the common mistake.
        guard level != .shapes else { return }
        for name in comparable {
            guard let hash = record.contentHashes?[name] else { continue }
            pendingContent[name, default: []].append((hash, file))
        }
    }

    /// Hashes one base tensor's bytes, if a pack recorded a hash for it, and compares.
    public func checkContent(_ name: String) throws {
        guard pendingContent[name] != nil else { return }
        try checkContent(name, hash: XXH3.hex(try base.checkpoint.withBytes(name) { XXH3.hash64($0) }))
    }

    /// As `checkContent(_:)`, with the XXH3 of the tensor's bytes (as `withBytes` gives them)
    /// computed by a caller that had them at hand.
    func checkContent(_ name: String, hash actual: String) throws {
        guard let expected = pendingContent.removeValue(forKey: name) else { return }
        contentCompared += 1
        for (hash, file) in expected where hash != actual {
            guard level != .skipped else {
                contentDifferences.append((file, name))
                continue
            }
            // A quantized base holds other values by nature: say so rather than "another checkpoint".
            let why = base.checkpoint.quantizedTypeName(name) != nil
                ? "\(base.folder) stores it quantized (\(base.checkpoint.decoded?.storageFormat ?? "quantized")), so its dequantized values differ from the base the pack was made for (as they must if it is that base quantized)"
                : "it is another checkpoint of this architecture (another fine-tune, or base instead of instruct)"
            throw BaseMismatchError(kind: .content, file: file, tensor: name,
                                    problem: "was made for a base whose \(name) holds other values (XXH3 \(hash); \(base.folder) has \(actual)): \(why)")
        }
    }

    /// Compares every tensor whose bytes have not been compared yet.
    public func checkRemainingContent() throws {
        for name in pendingTensors {
            try checkContent(name)
            base.checkpoint.releasePages(name)
        }
    }

    /// A pack from before format 1.1 records one fingerprint over the targets of all its adapters:
    /// recompute it over those, and when it differs, tell a dtype-only difference (every targeted
    /// tensor converted) from any other. Returns the tensors whose content may be compared.
    private func compareLegacy(_ fingerprint: String, targeted: [String], all: [Adapter], shapes: (String) -> [Int]?,
                               file: String) throws -> [String] {
        // Another adapter of the pack targeting what this base lacks leaves nothing to recompute;
        // the content hashes still cover the selected adapters' tensors.
        guard let everything = try? Set(all.flatMap({ try base.check($0, shapes: shapes, file: file) })) else { return targeted }
        compared.formUnion(targeted)
        if base.fingerprint(of: Array(everything)) == fingerprint { return targeted }
        let stored = Set(everything.compactMap { base.checkpoint.info($0)?.dtype })
        let floatTypes: [DType] = [.f32, .bf16, .f16, .f64]
        if stored.count == 1, let here = stored.first,
           let recorded = floatTypes.first(where: { base.fingerprint(of: Array(everything), as: $0) == fingerprint }) {
            warnings.append("\(file): was made for a base storing the tensors it targets in another dtype (\(recorded.rawValue) → \(here.rawValue)) than \(base.folder): same names and shapes, but content cannot be compared across dtypes")
            return []
        }
        try refuse(.fingerprint, file: file, tensor: nil, "was made for a base whose targeted tensors have other names, dtypes or shapes (fingerprint \(fingerprint); \(base.folder) gives \(base.fingerprint(of: Array(everything)))); the pack predates per-tensor records, so which tensor differs is unknown (re-importing it with its base records them)")
        return []
    }

    /// One warning for a base converted to another dtype, however many tensors it covers.
    private func warnAboutConversion(_ converted: [(name: String, recorded: String, here: DType)], file: String) {
        guard let first = converted.first else { return }
        let what = converted.count == 1 ? first.name : "\(converted.count) tensors it targets (first \(first.name))"
        let pairs = Set(converted.map { "\($0.recorded) → \($0.here.rawValue)" }).sorted().joined(separator: ", ")
        warnings.append("\(file): was made for a base storing \(what) in another dtype (\(pairs)) than \(base.folder): same names and shapes, but content cannot be compared across dtypes")
    }

    private func refuse(_ kind: BaseMismatchError.Kind, file: String, tensor: String?, _ problem: String) throws {
        guard level == .skipped else { throw BaseMismatchError(kind: kind, file: file, tensor: tensor, problem: problem) }
        warnings.append("\(file): \(problem)")
    }
}

extension BaseBinding {
    /// The one base several packs' adapters share, for a pack made of them (import, stack): model
    /// fields must agree where two record them, and so must each base tensor two records have
    /// (its dtype, shape and content). Where neither of two records binds a base by content,
    /// their `nameOrPath` must agree too, as it is all a PEFT config says of its base, unless
    /// `namesMayDiffer` (the caller checks every adapter against one base).
    public static func combine(_ identities: [(identity: BaseModelIdentity?, file: String)], namesMayDiffer: Bool) throws -> BaseModelIdentity? {
        var combined: BaseModelIdentity?
        var firstFile = ""
        for (identity, file) in identities {
            guard let identity else { continue }
            guard var current = combined else {
                combined = identity
                firstFile = file
                continue
            }
            func differ(_ what: String) -> BaseMismatchError {
                BaseMismatchError(kind: .differentBases, file: file, tensor: nil,
                                  problem: "was made for a different base than \(firstFile) (\(what)); adapters of different bases cannot share a pack")
            }
            var fields: [(String, AnyHashable?, AnyHashable?)] = [
                ("architecture", current.architecture, identity.architecture), ("model type", current.modelType, identity.modelType),
                ("hidden size", current.hiddenSize, identity.hiddenSize), ("layers", current.numLayers, identity.numLayers),
                ("attention heads", current.numAttentionHeads, identity.numAttentionHeads),
                ("key/value heads", current.numKeyValueHeads, identity.numKeyValueHeads), ("vocabulary", current.vocabSize, identity.vocabSize),
                ("tied head", current.tieWordEmbeddings, identity.tieWordEmbeddings),
            ]
            if !namesMayDiffer && current.contentHashes == nil && identity.contentHashes == nil { fields.append(("base", current.nameOrPath, identity.nameOrPath)) }
            for (field, a, b) in fields {
                if let a, let b, a != b { throw differ("\(field) \(b) vs \(a)") }
            }
            for (tensor, record) in identity.tensors ?? [:] {
                if let other = current.tensors?[tensor], other != record {
                    throw differ("base tensor \(tensor) is \(record.dtype) \(Shape.describe(record.shape)) vs \(other.dtype) \(Shape.describe(other.shape))")
                }
            }
            for (tensor, hash) in identity.contentHashes ?? [:] {
                if let other = current.contentHashes?[tensor], other != hash { throw differ("base tensor \(tensor) holds other values") }
            }
            current.architecture = current.architecture ?? identity.architecture
            current.modelType = current.modelType ?? identity.modelType
            current.nameOrPath = current.nameOrPath ?? identity.nameOrPath
            current.hiddenSize = current.hiddenSize ?? identity.hiddenSize
            current.numLayers = current.numLayers ?? identity.numLayers
            current.numAttentionHeads = current.numAttentionHeads ?? identity.numAttentionHeads
            current.numKeyValueHeads = current.numKeyValueHeads ?? identity.numKeyValueHeads
            current.vocabSize = current.vocabSize ?? identity.vocabSize
            current.tieWordEmbeddings = current.tieWordEmbeddings ?? identity.tieWordEmbeddings
            if current.contentHashes != nil || identity.contentHashes != nil {
                current.contentHashes = (current.contentHashes ?? [:]).merging(identity.contentHashes ?? [:]) { first, _ in first }
            }
            if current.tensors != nil || identity.tensors != nil {
                current.tensors = (current.tensors ?? [:]).merging(identity.tensors ?? [:]) { first, _ in first }
            }
            // A fingerprint covers the targets of the adapters it was computed over, no others.
            current.fingerprint = nil
            combined = current
        }
        return combined
    }
}
