import Foundation
import Testing
@testable import PeftPack

/// A deliberately small test-side mapping from the fixture adapter folders (PEFT and AdapterHub)
/// to `Adapter` values and their tensors, until the real importers land.
enum TestAdapterMapping {
    struct Mapped {
        var adapters: [Adapter]
        var tensors: [String: HostTensor]

        func tensor(_ name: String) throws -> HostTensor {
            guard let tensor = tensors[name] else { throw MappingError(reason: "no tensor \(name)") }
            return tensor
        }
    }

    struct MappingError: Error, CustomStringConvertible {
        let reason: String
        var description: String { reason }
    }

    /// The adapter of a fixture case: PEFT's `adapter/` or AdapterHub's `adapter_safetensors/`.
    static func load(case name: String) throws -> Mapped {
        let directory = RuntimeFixtures.url("cases/\(name)")
        let peft = directory.appendingPathComponent("adapter")
        if FileManager.default.fileExists(atPath: peft.appendingPathComponent("adapter_config.json").path) {
            return try peftAdapter(peft, name: name)
        }
        return try adapterHub(directory.appendingPathComponent("adapter_safetensors"), name: name)
    }

    private static func json(_ url: URL) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    static func peftAdapter(_ directory: URL, name: String) throws -> Mapped {
        let config = try json(directory.appendingPathComponent("adapter_config.json"))
        let file = try SafetensorsTestFiles(files: [directory.appendingPathComponent("adapter_model.safetensors")])
        var tensors: [String: HostTensor] = [:]
        for key in file.names { tensors[key] = try file.tensor(key) }
        switch config["peft_type"] as! String {
        case "LORA": return try lora(config, tensors, name: name)
        case "IA3": return ia3(tensors, name: name)
        case "PREFIX_TUNING": return try prefix(config, tensors, name: name)
        case "PROMPT_TUNING", "P_TUNING":
            let module = AdapterModule(target: "prompt_embeddings", tensors: [TensorRole.promptEmbeddings: "prompt_embeddings"])
            return Mapped(adapters: [Adapter(name: name, kind: .prompt, modules: [module])], tensors: tensors)
        case let other:
            throw MappingError(reason: "peft_type \(other) is not mapped")
        }
    }

    private static let peftPrefix = "base_model.model."

    private static func lora(_ config: [String: Any], _ tensors: [String: HostTensor], name: String) throws -> Mapped {
        let roles: [(suffix: String, role: String)] = [
            (".lora_A.weight", TensorRole.loraA), (".lora_B.weight", TensorRole.loraB),
            (".lora_B.bias", TensorRole.loraBBias), (".lora_embedding_A", TensorRole.loraA),
            (".lora_embedding_B", TensorRole.loraB), (".lora_magnitude_vector", TensorRole.magnitude),
            (".base_layer.bias", TensorRole.targetBias),
        ]
        var modules: [String: AdapterModule] = [:]
        var full: [AdapterModule] = []
        for key in tensors.keys.sorted() {
            let path = String(key.dropFirst(peftPrefix.count))
            if let (suffix, role) = roles.first(where: { path.hasSuffix($0.suffix) }) {
                let target = String(path.dropLast(suffix.count))
                modules[target, default: AdapterModule(target: target)].tensors[role] = key
                if suffix.hasPrefix(".lora_embedding") { modules[target]!.layout = .embedding }
            } else {
                // modules_to_save copies and the embedding PEFT saves next to an embedding LoRA.
                let target = path.replacingOccurrences(of: ".base_layer.", with: ".")
                full.append(AdapterModule(target: target, mode: .replace, tensors: [TensorRole.fullValue: key]))
            }
        }
        let alpha = (config["lora_alpha"] as! NSNumber).doubleValue
        let alphaPattern = config["alpha_pattern"] as? [String: NSNumber] ?? [:]
        let rsLoRA = config["use_rslora"] as? Bool ?? false
        let fanInFanOut = config["fan_in_fan_out"] as? Bool ?? false
        let lowRank = try modules.values.sorted { $0.target < $1.target }.map { module -> AdapterModule in
            var module = module
            let rank = Double(tensors[module.tensors[TensorRole.loraA]!]!.shape[0])
            let moduleAlpha = try pattern(alphaPattern, matching: module.target).map(\.doubleValue) ?? alpha
            module.rank = Int(rank)
            module.scale = rsLoRA ? moduleAlpha / rank.squareRoot() : moduleAlpha / rank
            if module.layout == nil { module.layout = fanInFanOut ? .conv1d : .linear }
            return module
        }
        var adapters = [Adapter(name: name, kind: .lora, modules: lowRank)]
        if !full.isEmpty { adapters.append(Adapter(name: name + "-full", kind: .full, modules: full)) }
        return Mapped(adapters: adapters, tensors: tensors)
    }

    /// PEFT's get_pattern_key: the first pattern matching the whole path or a dotted suffix of it.
    private static func pattern<T>(_ patterns: [String: T], matching path: String) throws -> T? {
        for (key, value) in patterns {
            let regex = try NSRegularExpression(pattern: "^(.*\\.)?(\(key))$")
            if regex.firstMatch(in: path, range: NSRange(path.startIndex..., in: path)) != nil { return value }
        }
        return nil
    }

    private static func ia3(_ tensors: [String: HostTensor], name: String) -> Mapped {
        let modules = tensors.keys.sorted().map { key -> AdapterModule in
            let target = String(key.dropFirst(peftPrefix.count).dropLast(".ia3_l".count))
            // PEFT stores feed-forward (input-side) vectors as [1, in] and the others as [out, 1].
            let side: IA3Side = tensors[key]!.shape.first == 1 ? .input : .output
            return AdapterModule(target: target, side: side, tensors: [TensorRole.ia3Vector: key])
        }
        return Mapped(adapters: [Adapter(name: name, kind: .ia3, modules: modules)], tensors: tensors)
    }

    /// PEFT stores every layer's keys and values in one [tokens, layers · 2 · token_dim] table;
    /// layer l's keys are column block 2l, its values block 2l + 1.
    private static func prefix(_ config: [String: Any], _ tensors: [String: HostTensor], name: String) throws -> Mapped {
        let table = tensors["prompt_embeddings"]!
        let values = try table.floats()
        let tokens = table.shape[0], width = table.shape[1]
        let layers = config["num_layers"] as! Int, heads = config["num_attention_heads"] as! Int
        let tokenDim = config["token_dim"] as! Int
        precondition(width == layers * 2 * tokenDim)
        var mapped: [String: HostTensor] = [:]
        var modules: [AdapterModule] = []
        for layer in 0..<layers {
            var roles: [String: String] = [:]
            for (block, role) in [(2 * layer, TensorRole.prefixKeys), (2 * layer + 1, TensorRole.prefixValues)] {
                var slice: [Float] = []
                for token in 0..<tokens {
                    let start = token * width + block * tokenDim
                    slice += values[start..<start + tokenDim]
                }
                let tensorName = "\(name)/layers.\(layer)/\(role)"
                mapped[tensorName] = HostTensor(floats: slice, shape: [tokens, heads, tokenDim / heads], dtype: .f32)
                roles[role] = tensorName
            }
            modules.append(AdapterModule(target: "layers.\(layer)", layer: layer, tensors: roles))
        }
        var settings = AdapterSettings()
        settings.numVirtualTokens = tokens
        settings.numLayers = layers
        settings.numKeyValueHeads = heads
        settings.headDim = tokenDim / heads
        return Mapped(adapters: [Adapter(name: name, kind: .prefix, settings: settings, modules: modules)],
                      tensors: mapped)
    }

    static func adapterHub(_ directory: URL, name: String) throws -> Mapped {
        let file = try SafetensorsTestFiles(files: [directory.appendingPathComponent("adapter.safetensors")])
        let config = try json(directory.appendingPathComponent("adapter_config.json"))["config"] as! [String: Any]
        for flag in ["ln_before", "ln_after", "use_gating", "is_parallel", "phm_layer", "adapter_residual_before_ln"] {
            if config[flag] as? Bool == true { throw MappingError(reason: "AdapterHub \(flag)=true is not mapped") }
        }
        let roles = [("adapter_down.0.weight", TensorRole.downWeight), ("adapter_down.0.bias", TensorRole.downBias),
                     ("adapter_up.weight", TensorRole.upWeight), ("adapter_up.bias", TensorRole.upBias)]
        var tensors: [String: HostTensor] = [:]
        var modules: [String: AdapterModule] = [:]
        for key in file.names.sorted() {
            guard let marker = key.range(of: ".adapters.") else { continue }
            let site = String(key[..<marker.lowerBound])
            guard let role = roles.first(where: { key.hasSuffix("." + $0.0) })?.1 else {
                throw MappingError(reason: "AdapterHub tensor \(key) is not mapped")
            }
            let components = site.split(separator: ".")
            let layerIndex = components.firstIndex { $0 == "layer" || $0 == "layers" }!
            let layer = Int(components[layerIndex + 1])!
            // BERT: attention.output / output; Llama and GPT-2: attention_adapters / output_adapters.
            let position: BottleneckPosition =
                site.hasSuffix("attention.output") || site.hasSuffix("attention_adapters") ? .afterAttention : .afterFeedForward
            modules[site, default: AdapterModule(target: site, position: position, layer: layer)].tensors[role] = key
            tensors[key] = try file.tensor(key)
        }
        var settings = AdapterSettings()
        settings.nonLinearity = config["non_linearity"] as? String
        settings.originalLnBefore = config["original_ln_before"] as? Bool
        settings.originalLnAfter = config["original_ln_after"] as? Bool
        settings.residualBeforeLn = config["residual_before_ln"] as? Bool
        settings.scaling = (config["scaling"] as? NSNumber)?.doubleValue
        settings.reductionFactor = (config["reduction_factor"] as? NSNumber)?.doubleValue
        let adapter = Adapter(name: name, kind: .bottleneck, settings: settings,
                              modules: modules.values.sorted { $0.target < $1.target })
        return Mapped(adapters: [adapter], tensors: tensors)
    }
}

@Suite("Runtime test-side adapter mapping")
struct RuntimeAdapterMappingTests {
    @Test("every fixture adapter tensor lands in some module", arguments: RuntimeFixtures.caseNames())
    func everyTensorMapped(caseName: String) throws {
        let mapped = try TestAdapterMapping.load(case: caseName)
        let referenced = Set(mapped.adapters.flatMap { $0.modules.flatMap { $0.tensors.values } })
        #expect(referenced == Set(mapped.tensors.keys))
    }
}
