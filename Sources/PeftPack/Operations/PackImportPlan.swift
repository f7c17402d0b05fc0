import Foundation

extension PackImport {
    /// Import's plan: every source's adapters, the tensors to store (read from their files, or
    /// copied from packs, when written) and what was left out, checked against the base when one
    /// is given; then the document, and the write step that stores the tensors.
    struct Gathered {
        let model: BaseModel?
        /// A pack bound to a base is re-bound to the given one only if that is the same base.
        let binding: BaseBinding?
        let withoutHead: Bool
        let dropUnloaded: Bool
        private(set) var adapters: [Adapter] = []
        /// Each adapter's JSON as it will be stored: a pack's own, unless renamed or corrected.
        private var adapterJSON: [StrictJSON] = []
        private var pending: [ImportedTensor] = []
        private var pendingFiles: [String] = []
        private var copied: [(reader: PackReader, name: String, packName: String)] = []
        private var identities: [(identity: BaseModelIdentity?, file: String)] = []
        private var inheritedMetadata: [String: String] = [:]
        private(set) var dropped: [DroppedTensor] = []
        private(set) var leftOut: [String] = []
        private(set) var leftOutHeadFiles: [String] = []
        private(set) var headWarnings: [String] = []

        init(model: BaseModel?, withoutHead: Bool, dropUnloaded: Bool) {
            self.model = model
            binding = model.map { BaseBinding(base: $0, level: .content) }
            self.withoutHead = withoutHead
            self.dropUnloaded = dropUnloaded
        }

        mutating func add(_ source: Source) throws {
            let kind = try AdapterSourceFolder.detect(source.path)
            switch kind {
            case .pack:
                try addPack(source)
            case .peft, .adapterhub:
                for (folder, name) in try adapterFolders(source, kind: kind, leftOut: &leftOut) {
                    try addFolder(folder, kind: kind, name: name)
                }
            case .gguf:
                let (imported, identity) = try GGUFLoRA.importAdapter(path: source.path, name: source.name, base: model)
                try add(imported, from: source.path, identity: identity)
            case .mlx:
                let imported = try MLXImporter.importAdapter(folder: source.path, name: source.name, base: model)
                try add(imported, from: source.path, identity: nil)
            case .safetensors:
                throw InputError(file: source.path, problem: "is a plain safetensors checkpoint, not an adapter (import takes PEFT or AdapterHub folders and packs)")
            }
        }

        private mutating func add(_ imported: ImportedAdapter, from file: String, identity: BaseModelIdentity?) throws {
            adapters.append(imported.adapter)
            adapterJSON.append(try StrictJSON.encoding(imported.adapter))
            pending += imported.tensors
            pendingFiles += imported.tensors.map { _ in file }
            identities.append((identity, file))
        }

        /// A pack's adapters, renamed when the source gives a name, with their tensors to copy.
        private mutating func addPack(_ source: Source) throws {
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
                // In role order: a dictionary's own order changes from process to process, and with
                // it the pack's bytes.
                for module in document.adapters[position].modules {
                    for (_, tensor) in module.tensors.sorted(by: { $0.key < $1.key }) { copied.append((reader, tensor, renamed[tensor] ?? tensor)) }
                }
            }
            let shapes = Dictionary(reader.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
            if let binding {
                let targets = try document.adapters.flatMap { try binding.base.check($0, shapes: { shapes[$0] }, file: source.path) }
                try binding.add(document.base, targets: targets, all: document.adapters, shapes: { shapes[$0] }, file: source.path)
            }
            identities.append((document.base ?? identity(from: document.adapters), source.path))
            inheritedMetadata.merge(document.userMetadata) { current, _ in current }
        }

        /// One PEFT or AdapterHub adapter folder; an AdapterHub prediction head is refused unless
        /// left out on request or the base's own.
        private mutating func addFolder(_ folder: String, kind: AdapterSourceKind, name: String?) throws {
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
            try add(imported, from: folder, identity: identity(from: [imported.adapter]))
        }

        /// The pack's document: names distinct, one base for all, and with a base given every
        /// adapter checked against it, in its module layouts and bound to its tensors.
        mutating func document(output: String, userMetadata: [String: String]) throws -> StrictJSON {
            var seen = Set<String>()
            for adapter in adapters where !seen.insert(adapter.name).inserted {
                throw InputError(file: output, problem: "two adapters are named \(adapter.name)", kind: .duplicateName)
            }
            try binding?.checkRemainingContent()
            var base = try BaseBinding.combine(identities, namesMayDiffer: model != nil) ?? BaseModelIdentity()
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
            return documentJSON
        }

        /// Import's write step: every tensor read, surveyed for NaN/±Inf (refused unless
        /// `allowNonFinite`, then listed) and stored; the pack appears whole or not at all.
        func write(to output: String, document: StrictJSON, level: Int32, allowNonFinite: Bool,
                   progress: ((Int, Int) -> Void)?) throws -> [NonFiniteTensor] {
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
                try writer.finish(document: document)
            } catch {
                writer.abandon()
                throw error
            }
            return nonFinite
        }
    }
}
