import Foundation

/// `peftpack import`: several adapter sources into one pack.
public enum PackImport {
    public struct Source {
        public var path: String
        public var name: String?
        public init(path: String, name: String?) {
            self.path = path
            self.name = name
        }
    }

    public struct Report: Encodable {
        public var output: String
        public var adapters: [String]
        public var tensors: Int
        public var rawBytes: Int
        public var storedBytes: Int
        public var baseChecked: Bool
        /// Tensors holding NaN or ±Inf, kept because the caller allowed them (otherwise refused).
        public var nonFiniteTensors: [NonFiniteTensor]
        /// Saved tensors PEFT would not load, left out on request (`dropUnloaded`).
        public var droppedTensors: [DroppedTensor]
        /// Folders under a PEFT save folder that hold something other than its adapters, and why.
        public var leftOut: [String]
        /// AdapterHub prediction-head files left out: on request (`withoutHead`), or because the head
        /// is the base's own; any other head is refused.
        public var leftOutHeadFiles: [String]
        public var warnings: [String]
    }

    public struct DroppedTensor: Encodable {
        public var file: String
        public var tensor: String
        public var reason: String
    }

    /// `allowNonFinite`: keep tensors holding NaN or ±Inf (listed in the report) instead of refusing them.
    /// `withoutHead`: import an AdapterHub adapter saved with a prediction head alone (the head files listed).
    /// Plan (every source's adapters read and checked, the document made) → write (each tensor
    /// surveyed and stored).
    public static func run(sources: [Source], output: String, baseFolder: String?, level: Int32,
                           userMetadata: [String: String] = [:], allowNonFinite: Bool = false, dropUnloaded: Bool = false,
                           withoutHead: Bool = false, force: Bool = false, progress: ((Int, Int) -> Void)? = nil) throws -> Report {
        try OutputDestination.claim(output, as: .file, force: force, inputs: sources.map(\.path) + (baseFolder.map { [$0] } ?? []))
        let model = try baseFolder.map { try BaseModel(folder: $0) }
        var gathered = Gathered(model: model, withoutHead: withoutHead, dropUnloaded: dropUnloaded)
        for source in sources { try gathered.add(source) }
        let documentJSON = try gathered.document(output: output, userMetadata: userMetadata)
        let nonFinite = try gathered.write(to: output, document: documentJSON, level: level, allowNonFinite: allowNonFinite, progress: progress)
        let reader = try PackReader(path: output)
        return Report(output: output, adapters: gathered.adapters.map(\.name), tensors: reader.tensors.count,
                      rawBytes: reader.tensors.reduce(0) { $0 + $1.rawBytes },
                      storedBytes: reader.fileSize, baseChecked: baseFolder != nil, nonFiniteTensors: nonFinite,
                      droppedTensors: gathered.dropped, leftOut: gathered.leftOut, leftOutHeadFiles: gathered.leftOutHeadFiles,
                      warnings: gathered.headWarnings + (gathered.binding?.report.warnings ?? []))
    }

    /// The adapter folders one source holds, each with its adapter's name (nil: the tool's
    /// default): a PEFT save folder holds one per adapter it was saved with.
    static func adapterFolders(_ source: Source, kind: AdapterSourceKind, leftOut: inout [String]) throws -> [(String, String?)] {
        guard kind == .peft else { return [(source.path, source.name)] }
        let saved = AdapterSourceFolder.peftSave(source.path)
        leftOut += saved.leftOut.map { "\($0.folder): \($0.reason)" }
        if !saved.root, let name = source.name {
            throw InputError(file: source.path, problem: "holds no adapter at its root for the name \(name): its adapters are in sub-folders (\(saved.subfolders.joined(separator: ", "))), named after them")
        }
        return (saved.root ? [(source.path, source.name)] : [])
            + saved.subfolders.map { ((source.path as NSString).appendingPathComponent($0), $0) }
    }

    /// What the adapters' own configs say about their base.
    static func identity(from adapters: [Adapter]) -> BaseModelIdentity {
        var identity = BaseModelIdentity()
        for adapter in adapters {
            guard let text = adapter.source?.configText, let json = try? StrictJSON.parse(Array(text.utf8)) else { continue }
            identity.nameOrPath = identity.nameOrPath ?? json["base_model_name_or_path"]?.stringValue ?? json["model_name"]?.stringValue
            identity.modelType = identity.modelType ?? json["model_type"]?.stringValue
            identity.architecture = identity.architecture ?? json["model_class"]?.stringValue
            identity.hiddenSize = identity.hiddenSize ?? json["hidden_size"]?.integerValue.map(Int.init)
        }
        return identity
    }
}
