import Foundation
import Testing
@testable import PeftPack

/// The adapter document's module types (spec/FORMAT.md §9) and the per-kind rules.
@Suite struct AdapterKindTests {
    /// Each adapter object as the pack stores it, canonical bytes, beside the typed value.
    static func adapters(of pack: String) throws -> [(raw: [UInt8], adapter: Adapter)] {
        let reader = try PackReader(path: pack)
        let raw = try #require(reader.document["adapters"]?.arrayValue)
        return zip(raw, try reader.adapterDocument().adapters).map { ($0.canonicalBytes(), $1) }
    }

    /// Packs committed before the module types changed (the malformed corpus's inputs, written by
    /// the CLI of their day): decoding and encoding again gives their bytes back, so the typed
    /// modules keep today's keys and values.
    @Test func committedPacksReencodeToTheirOwnBytes() throws {
        let folder = Fixtures.repositoryRoot.appendingPathComponent("Tests/PeftPackTests/Malformed/inputs").path
        let packs = try #require(FileManager.default.enumerator(atPath: folder)?.allObjects as? [String])
            .filter { $0.hasSuffix(".peftpack") }.map { folder + "/" + $0 }
        var checked = 0
        for pack in packs {
            guard let adapters = try? Self.adapters(of: pack) else { continue }
            for (raw, adapter) in adapters {
                #expect(try StrictJSON.encoding(adapter).canonicalBytes() == raw, "\(pack): \(adapter.name)")
                checked += 1
            }
        }
        #expect(checked >= 20)
    }

    /// Every kind and every whole-tensor effect (the cases cover LoRA, rsLoRA, DoRA, B bias, IA3,
    /// Houlsby and Pfeiffer bottlenecks, prefix, prompt, modules_to_save, trainable-token rows).
    @Test(arguments: RuntimeFixtures.caseNames() + ["configs:tokens_llama", "configs:tokens_gpt2_tied"])
    func importedAdaptersRoundTrip(caseName: String) throws {
        let pack = caseName.hasPrefix("configs:")
            ? try ConfigFixtures.pack(String(caseName.dropFirst("configs:".count))).path
            : try ImportedCase.load(case: caseName).pack
        let reader = try PackReader(path: pack)
        for (position, (raw, adapter)) in try Self.adapters(of: pack).enumerated() {
            #expect(try StrictJSON.encoding(adapter).canonicalBytes() == raw)
            let modules = try #require(reader.document["adapters"]?.arrayValue?[position]["modules"]?.arrayValue)
            for (json, module) in zip(modules, adapter.modules) {
                guard case .object(let members) = json else { Issue.record("module is not an object"); continue }
                #expect(Set(members.map(\.key)) == Self.specMembers(module), "\(module.target)")
            }
        }
    }

    /// The members spec §9.5–9.10 gives a module of each kind; the whole tensors here all come
    /// from PEFT files, so each keeps the key it was saved under.
    static func specMembers(_ module: AdapterModule) -> Set<String> {
        let common: Set<String> = ["target", "tensors"]
        switch module.change {
        case .lowRank, .loha, .lokr, .adalora: return common.union(["layout", "rank", "scale"])
        case .vera: return common.union(["layout", "rank"])
        case .ia3: return common.union(["layout", "side"])
        case .bottleneck: return common.union(["layer", "position"])
        case .prefix: return common.union(["layer"])
        case .prompt: return common
        case .wholeTensor:
            return common.union(["mode", "source_name"]).union(module.replacedRows == nil ? [] : ["rows"])
        }
    }

    private static func decode(_ module: String, kind: AdapterKind) throws -> Adapter {
        let text = "{\"name\": \"a\", \"kind\": \"\(kind.rawValue)\", \"settings\": {}, \"modules\": [\(module)]}"
        return try StrictJSON.parse(Array(text.utf8)).decoded(as: Adapter.self)
    }

    @Test func aModuleWithModeIsAWholeTensorInAnyKind() throws {
        let adapter = try Self.decode(#"{"target": "lm_head.weight", "mode": "rows", "rows": [3, 1], "tensors": {"value": "v"}}"#, kind: .lora)
        #expect(adapter.modules[0].change == .wholeTensor(WholeTensorModule(.rows([3, 1]))))
        let full = try Self.decode(#"{"target": "x.weight", "tensors": {"value": "v"}}"#, kind: .full)
        #expect(full.modules[0].change == .wholeTensor(WholeTensorModule(.replace)), "kind full without mode replaces")
    }

    @Test func aKindsMembersAreRequired() {
        #expect(throws: DecodingError.self) {
            try Self.decode(#"{"target": "q", "layout": "linear", "rank": 4, "tensors": {}}"#, kind: .lora)
        }
        #expect(throws: DecodingError.self) {
            try Self.decode(#"{"target": "q", "layout": "linear", "tensors": {}}"#, kind: .ia3)
        }
        #expect(throws: DecodingError.self) {
            try Self.decode(#"{"target": "x", "mode": "rows", "tensors": {}}"#, kind: .lora)
        }
    }

    /// Spec §9.10: a reader MUST refuse a mode it does not know, naming it.
    @Test func anUnknownModeIsRefusedByName() {
        do {
            _ = try Self.decode(#"{"target": "x", "mode": "scale", "tensors": {}}"#, kind: .full)
            Issue.record("decoded an unknown mode")
        } catch {
            #expect("\(error)".contains("mode \"scale\""), "\(error)")
        }
    }

    @Test func unknownMembersAreIgnored() throws {
        let adapter = try Self.decode(#"{"target": "q", "layout": "conv1d", "rank": 2, "scale": 0.5, "side": "input", "tensors": {}}"#, kind: .lora)
        #expect(adapter.modules[0].change == .lowRank(LowRankModule(layout: .conv1d, rank: 2, scale: 0.5)))
    }

    /// The table is what the operations refuse by: merge, stack and export consult it.
    @Test func rulesOfEachKind() {
        #expect(AdapterKind.allCases.filter(\.rules.mergeable) == [.lora, .ia3, .full, .loha, .lokr, .adalora, .vera])
        #expect(AdapterKind.allCases.filter { !$0.rules.stackable } == [.full, .loha, .lokr, .adalora, .vera])
        #expect(AdapterKind.allCases.filter { $0.exports(to: .peft) } == [.lora, .ia3, .prefix, .prompt, .loha, .lokr, .adalora, .vera])
        #expect(AdapterKind.allCases.filter { $0.exports(to: .mlx) } == [.lora, .full])
        #expect(AdapterKind.allCases.filter { $0.exports(to: .gguf) } == [.lora])
        #expect(AdapterKind.allCases.filter { $0.exports(to: .adapterhub) } == [.bottleneck])
        #expect(AdapterKind.allCases.allSatisfy { $0.rules.mergeable == ($0.rules.addedComputation == nil) })
    }

    /// A module carrying a role its kind does not have is refused at run time, naming the role.
    @Test func aRoleOutsideTheKindIsRefused() throws {
        var imported = try ImportedCase.load(case: "llama_lora")
        imported.adapters[0].modules[0].tensors[TensorRole.ia3Vector] = imported.adapters[0].modules[0].tensors[TensorRole.loraA]
        let model = try RuntimeFixtures.model("models/llama-tiny")
        #expect(throws: RuntimeError.unexpectedAdapterTensor(adapter: "llama_lora", target: imported.adapters[0].modules[0].target,
                                                             role: TensorRole.ia3Vector)) {
            try AdapterSet(adapters: imported.adapters, model: model, tensor: imported.tensor)
        }
    }

    /// The orientation rule: W [out, in] is stored as is for nn.Linear and transposed for Conv1D
    /// and embeddings. What it does to merged weights is checked against PEFT's own merges by
    /// the merge tests (gpt2_lora_fan_in_fan_out, llama_lora_embedding); this pins the rule.
    @Test func orientationOfEachLayout() {
        let linear = WeightOrientation(storedShape: [3, 5], layout: .linear)
        #expect((linear.out, linear.inputs, linear.offset(1, 2)) == (3, 5, 1 * 5 + 2))
        for layout in [WeightLayout.conv1d, .embedding] {
            let stored = WeightOrientation(storedShape: [5, 3], layout: layout)
            #expect((stored.out, stored.inputs, stored.offset(1, 2)) == (3, 5, 2 * 3 + 1))
            #expect(WeightOrientation(out: 3, inputs: 5, layout: layout).storedShape == [5, 3])
        }
    }
}

/// A pack whose module lacks a member its kind needs is refused when read, on one line naming
/// the module and the member, before anything is written.
@Suite struct AdapterKindRefusalTests {
    @Test func aLoRAModuleWithoutScaleIsRefusedByName() throws {
        let reader = try PackReader(path: try ImportedCase.load(case: "llama_lora").pack)
        guard case .object(var members) = reader.document, let index = members.firstIndex(where: { $0.key == "adapters" }),
              case .array(var adapters) = members[index].value, case .object(var adapter) = adapters[0],
              let modulesIndex = adapter.firstIndex(where: { $0.key == "modules" }),
              case .array(var modules) = adapter[modulesIndex].value, case .object(var module) = modules[2] else {
            Issue.record("unexpected document layout")
            return
        }
        module.removeAll { $0.key == "scale" }
        modules[2] = .object(module)
        adapter[modulesIndex].value = .array(modules)
        adapters[0] = .object(adapter)
        members[index].value = .array(adapters)
        let pack = Fixtures.temporaryDirectory() + "/no-scale.peftpack"
        let writer = try PackWriter(destination: pack, options: .init())
        for entry in reader.tensors { try writer.append(try reader.readTensor(entry.name), name: entry.name) }
        try writer.finish(document: .object(members))
        let output = Fixtures.temporaryDirectory() + "/merged"
        let result = try CLI.run(["merge", "--base", RuntimeFixtures.url("models/llama-tiny").path, pack, "-o", output])
        #expect(result.status == 2)
        #expect(result.stderr.contains("adapter document does not match the format: adapters[0].modules[2] lacks scale"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
