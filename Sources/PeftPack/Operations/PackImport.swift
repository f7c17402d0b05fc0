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
    public static func run(sources: [Source], output: String, baseFolder: String?, level: Int32,
                           userMetadata: [String: String] = [:], allowNonFinite: Bool = false, dropUnloaded: Bool = false,
                           withoutHead: Bool = false, force: Bool = false, progress: ((Int, Int) -> Void)? = nil) throws -> Report {
        try OutputDestination.claim(output, as: .file, force: force, inputs: sources.map(\.path) + (baseFolder.map { [$0] } ?? []))
        var adapterJSON: [StrictJSON] = []
        var adapters: [Adapter] = []
        var pending: [ImportedTensor] = []
        var pendingFiles: [String] = []
        var copied: [(reader: PackReader, name: String, packName: String)] = []
        var identities: [(identity: BaseModelIdentity?, file: String)] = []
        var inheritedMetadata: [String: String] = [:]
        var dropped: [DroppedTensor] = []
        var leftOut: [String] = []
        var leftOutHeadFiles: [String] = []
        var headWarnings: [String] = []
        let model = try baseFolder.map { try BaseModel(folder: $0) }
        // A pack bound to a base is re-bound to the given one only if that is the same base.
        let binding = model.map { BaseBinding(base: $0, level: .content) }

        for source in sources {
            let kind = try AdapterSourceFolder.detect(source.path)
            switch kind {
            case .pack:
                let reader = try PackReader(path: source.path)
                let document = try reader.adapterDocument()
                guard source.name == nil || document.adapters.count == 1 else {
                    throw InputError(file: source.path, problem: "holds \(document.adapters.count) adapters, so one name cannot be given to it", kind: .oneNameForSeveral)
                }
                for (position, raw) in (reader.document["adapters"]?.arrayValue ?? []).enumerated() {
                    var adapter = document.adapters[position]
                    var item = raw
                    var renamed: [String: String] = [:]
                    if let name = source.name, name != adapter.name {
                        // Tensors are stored as "adapter/target/role": a renamed adapter's tensors
                        // move with it, so two packs' adapters never collide.
                        adapter.name = name
                        for index in adapter.modules.indices {
                            for (role, tensor) in adapter.modules[index].tensors {
                                let target = adapter.modules[index].target
                                let moved = AdapterModule.tensorName(adapter: name, target: target, role: role)
                                renamed[tensor] = moved
                                adapter.modules[index].tensors[role] = moved
                            }
                        }
                        item = try StrictJSON.encoding(adapter)
                    }
                    adapters.append(adapter)
                    adapterJSON.append(item)
                    for module in document.adapters[position].modules {
                        for tensor in module.tensors.values { copied.append((reader, tensor, renamed[tensor] ?? tensor)) }
                    }
                }
                let shapes = Dictionary(reader.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
                if let binding {
                    let targets = try document.adapters.flatMap { try binding.base.check($0, shapes: { shapes[$0] }, file: source.path) }
                    try binding.add(document.base, targets: targets, all: document.adapters, shapes: { shapes[$0] }, file: source.path)
                }
                identities.append((document.base ?? identity(from: document.adapters), source.path))
                inheritedMetadata.merge(document.userMetadata) { current, _ in current }
            case .peft, .adapterhub:
                for (folder, name) in try adapterFolders(source, kind: kind, leftOut: &leftOut) {
                    let head = kind == .adapterhub ? AdapterSourceFolder.adapterHubHead(in: folder) : []
                    if !head.isEmpty && !withoutHead {
                        let files = head.map { ($0 as NSString).lastPathComponent }.joined(separator: ", ")
                        guard let model else {
                            throw InputError(file: folder, problem: "holds a prediction head (\(files)), which a pack cannot carry: AdapterHub's load_adapter would load it over the model's own head (given the base, a head equal to its own is accepted)", kind: .predictionHead)
                        }
                        let differing = try AdapterSourceFolder.adapterHubHeadDifferences(in: folder, base: model)
                        if let first = differing.first {
                            throw InputError(file: folder, problem: "holds a prediction head (\(files)) whose \(first) is not the base's, which a pack cannot carry: AdapterHub's load_adapter would load it over the model's own head", kind: .predictionHead)
                        }
                        headWarnings.append("\(folder): its prediction head (\(files)) is the base's own; left out, as loading it changes nothing")
                    }
                    leftOutHeadFiles += head
                    let imported = try AdapterSourceFolder.importFolder(folder, kind: kind, name: name, dropUnloaded: dropUnloaded)
                    dropped += imported.leftOut.map { DroppedTensor(file: folder, tensor: $0.tensor, reason: $0.reason) }
                    adapters.append(imported.adapter)
                    adapterJSON.append(try StrictJSON.encoding(imported.adapter))
                    pending += imported.tensors
                    pendingFiles += imported.tensors.map { _ in folder }
                    identities.append((identity(from: [imported.adapter]), folder))
                }
            case .gguf:
                let (imported, identity) = try GGUFLoRA.importAdapter(path: source.path, name: source.name, base: model)
                adapters.append(imported.adapter)
                adapterJSON.append(try StrictJSON.encoding(imported.adapter))
                pending += imported.tensors
                pendingFiles += imported.tensors.map { _ in source.path }
                identities.append((identity, source.path))
            case .safetensors:
                throw InputError(file: source.path, problem: "is a plain safetensors checkpoint, not an adapter (import takes PEFT or AdapterHub folders and packs)")
            }
        }
        var seen = Set<String>()
        for adapter in adapters where !seen.insert(adapter.name).inserted {
            throw InputError(file: output, problem: "two adapters are named \(adapter.name)", kind: .duplicateName)
        }

        try binding?.checkRemainingContent()
        let combined = try BaseBinding.combine(identities, namesMayDiffer: model != nil)
        var base = combined ?? BaseModelIdentity()
        if let model {
            var shapes = Dictionary(pending.map { ($0.packName, $0.info.shape) }, uniquingKeysWith: { first, _ in first })
            for (reader, name, packName) in copied { shapes[packName] = reader.entry(named: name)?.shape }
            var targeted: [String] = []
            for (index, adapter) in adapters.enumerated() {
                targeted += try model.check(adapter, shapes: { shapes[$0] }, file: output)
                let corrected = model.withModuleLayouts(adapter)
                if corrected != adapter {
                    adapters[index] = corrected
                    adapterJSON[index] = try StrictJSON.encoding(corrected)
                }
            }
            var identity = try model.identity(binding: targeted)
            identity.nameOrPath = base.nameOrPath
            base = identity
        }

        let document = PackDocument(base: base, userMetadata: inheritedMetadata.merging(userMetadata) { _, new in new }, adapters: adapters)
        var documentJSON = try StrictJSON.encoding(document)
        if case .object(var members) = documentJSON {
            members.removeAll { $0.key == "adapters" }
            members.append(("adapters", .array(adapterJSON)))
            documentJSON = .object(members)
        }

        var nonFinite: [NonFiniteTensor] = []
        func survey(_ tensor: HostTensor, name: String, file: String) throws {
            guard let found = FiniteValues.survey(tensor, name: name, file: file) else { return }
            guard allowNonFinite else {
                throw NonFiniteError(kind: .inputTensor, description: "\(file): tensor \(name) holds \(NonFiniteCount(nan: found.nan, infinite: found.infinite).phrase) of its \(found.elements) elements")
            }
            nonFinite.append(found)
        }
        let writer = try PackWriter(destination: output, options: .init(level: level))
        do {
            let total = pending.count + copied.count
            var done = 0
            for (tensor, file) in zip(pending, pendingFiles) {
                let value = try tensor.load()
                try survey(value, name: tensor.packName, file: file)
                try writer.append(value, name: tensor.packName)
                done += 1
                progress?(done, total)
            }
            for (reader, name, packName) in copied {
                let value = try reader.readTensor(name)
                try survey(value, name: name, file: reader.path)
                try writer.append(value, name: packName)
                done += 1
                progress?(done, total)
            }
            try writer.finish(document: documentJSON)
        } catch {
            writer.abandon()
            throw error
        }
        let reader = try PackReader(path: output)
        return Report(output: output, adapters: adapters.map(\.name), tensors: reader.tensors.count,
                      rawBytes: reader.tensors.reduce(0) { $0 + $1.rawBytes },
                      storedBytes: reader.fileSize, baseChecked: baseFolder != nil, nonFiniteTensors: nonFinite,
                      droppedTensors: dropped, leftOut: leftOut, leftOutHeadFiles: leftOutHeadFiles, warnings: headWarnings + (binding?.report.warnings ?? []))
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
