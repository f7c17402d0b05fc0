import Foundation

/// AdapterHub bottleneck adapters: keys `<sub-layer path>.adapters.<name>.adapter_down.0.weight`,
/// `…adapter_down.0.bias`, `…adapter_up.weight`, `…adapter_up.bias` (the down projection is the
/// first element of a Sequential, hence `.0`).
public enum AdapterHubFormat {
    static let roleSuffixes: [(suffix: String, role: String)] = [
        ("adapter_down.0.weight", TensorRole.downWeight),
        ("adapter_down.0.bias", TensorRole.downBias),
        ("adapter_up.weight", TensorRole.upWeight),
        ("adapter_up.bias", TensorRole.upBias),
    ]

    public static func importAdapter(name: String?, configText: String, tensors: TensorSource,
                                     configFile: String, weightsFile: String) throws -> ImportedAdapter {
        let config = try AdapterHubConfig(text: configText, file: configFile)
        let adapterName = name ?? config.name
        let marker = ".adapters.\(config.name)."
        var order: [String] = []
        var roles: [String: [String: String]] = [:]
        for key in tensors.tensorNames.sorted() {
            guard let range = key.range(of: marker) else {
                throw InputError(file: weightsFile, tensor: key, problem: "is not a tensor of adapter \(config.name)")
            }
            let target = String(key[..<range.lowerBound])
            let rest = String(key[range.upperBound...])
            guard let role = roleSuffixes.first(where: { $0.suffix == rest })?.role else {
                throw InputError(file: weightsFile, tensor: key, problem: "is not a bottleneck weight peftpack understands (adapter_down.0.*, adapter_up.*)")
            }
            if roles[target] == nil {
                order.append(target)
                roles[target] = [:]
            }
            roles[target]![role] = key
        }
        var modules: [AdapterModule] = []
        var imported: [ImportedTensor] = []
        for target in order {
            let saved = roles[target]!
            for (_, role) in roleSuffixes where saved[role] == nil {
                throw InputError(file: weightsFile, problem: "\(target) has no \(role) tensor")
            }
            let down = tensors.info(saved[TensorRole.downWeight]!)!.shape
            let up = tensors.info(saved[TensorRole.upWeight]!)!.shape
            guard down.count == 2, up == [down[1], down[0]] else {
                throw InputError(file: weightsFile, tensor: saved[TensorRole.upWeight], problem: "has shape \(Shape.describe(up)) but the down projection is \(Shape.describe(down))")
            }
            guard let (layer, position) = site(of: target) else {
                throw InputError(file: weightsFile, tensor: saved[TensorRole.downWeight], problem: "is not at a place AdapterHub inserts bottleneck adapters in a model family peftpack knows")
            }
            var module = AdapterModule(target: target, position: position, layer: layer)
            for (_, role) in roleSuffixes {
                let key = saved[role]!
                let info = tensors.info(key)!
                let packName = AdapterModule.tensorName(adapter: adapterName, target: target, role: role)
                module.tensors[role] = packName
                imported.append(ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: info.dtype, shape: info.shape)) {
                    try tensors.tensor(key)
                })
            }
            modules.append(module)
        }
        guard !modules.isEmpty else { throw InputError(file: weightsFile, problem: "holds no adapter tensors") }
        let adapter = Adapter(name: adapterName, kind: .bottleneck, source: AdapterSource(format: "adapterhub", configText: configText),
                              settings: config.settings, modules: modules)
        return ImportedAdapter(adapter: adapter, tensors: imported)
    }

    /// The layer and position of an adapter's sub-layer path (`encoder.layer.3.output`,
    /// `model.layers.3.output_adapters`), in the registered family whose AdapterHub points name it.
    static func site(of target: String) -> (layer: Int, position: BottleneckPosition)? {
        for family in ArchitectureRegistry.all {
            guard let (layer, suffix) = family.layerPosition(of: target) else { continue }
            if family.adapterHub.afterAttention.contains(suffix) { return (layer, .afterAttention) }
            if family.adapterHub.afterFeedForward.contains(suffix) { return (layer, .afterFeedForward) }
        }
        return nil
    }

    public struct Output {
        public var configText: String
        public var tensors: [(key: String, tensor: HostTensor)]
    }

    /// The exported keys use the adapter name recorded in the AdapterHub config, which is what
    /// `load_adapter` looks for.
    public static func export(_ adapter: Adapter, tensor: (String) throws -> HostTensor) throws -> Output {
        guard adapter.kind == .bottleneck else {
            throw InputError(file: adapter.name, problem: "is a \(adapter.kind.rawValue) adapter; AdapterHub export takes bottleneck adapters", kind: .onlyPeftExpresses)
        }
        guard let source = adapter.source, source.format == "adapterhub", let configText = source.configText else {
            throw InputError(file: adapter.name, problem: "has no AdapterHub config to export")
        }
        let config = try AdapterHubConfig(text: configText, file: adapter.name)
        var out: [(key: String, tensor: HostTensor)] = []
        for module in adapter.modules {
            for (suffix, role) in roleSuffixes {
                guard let name = module.tensors[role] else {
                    throw InputError(file: adapter.name, problem: "\(module.target) lacks \(role)")
                }
                out.append(("\(module.target).adapters.\(config.name).\(suffix)", try tensor(name)))
            }
        }
        return Output(configText: configText, tensors: out)
    }
}
