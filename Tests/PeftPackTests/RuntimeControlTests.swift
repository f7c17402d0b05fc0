import Foundation
import Testing
@testable import PeftPack

/// Negative controls (a perturbed adapter must miss the reference by far more than the
/// tolerance) and compositions whose result the Python references pin down.
@Suite("Runtime controls and compositions")
struct RuntimeControlTests {
    static let tolerance = RuntimeReferenceTests.tolerance

    private func run(_ caseName: String, edit: (inout ImportedCase) throws -> Void) throws
        -> (error: Double, reference: RuntimeFixtures.Reference, model: TransformerModel)
    {
        let reference = try RuntimeFixtures.reference(case: caseName)
        let model = try RuntimeFixtures.model(try #require(reference.metadata["base"]))
        var imported = try ImportedCase.load(case: caseName)
        try edit(&imported)
        let adapters = try AdapterSet(adapters: imported.adapters, model: model, tensor: imported.tensor)
        let output = try model.forward(inputIds: reference.inputIds, adapters: adapters)
        return (RuntimeFixtures.relativeError(output, reference.outputAdapter), reference, model)
    }

    private static func edited(_ tensor: HostTensor, _ change: (inout [Float]) -> Void) throws -> HostTensor {
        var values = tensor.floats()
        change(&values)
        return HostTensor(floats: values, shape: tensor.shape, dtype: .f32)
    }

    @Test("one LoRA B row with its sign flipped misses the reference")
    func flippedLoRARow() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let (error, _, _) = try run("llama_lora") { imported in
            let name = try #require(imported.tensorName(target: "model.layers.0.self_attn.q_proj", role: TensorRole.loraB))
            let tensor = try #require(imported.tensors[name])
            let columns = tensor.shape[1]
            imported.tensors[name] = try Self.edited(tensor) { values in
                for i in 0..<columns { values[i] = -values[i] }
            }
        }
        print("flipped LoRA B row: relative error \(error)")
        #expect(error > 100 * Self.tolerance)
    }

    @Test("one changed prefix value misses the reference")
    func changedPrefixValue() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let (error, _, _) = try run("llama_prefix") { imported in
            let name = try #require(imported.tensorName(target: "layers.0", role: TensorRole.prefixValues))
            let tensor = try #require(imported.tensors[name])
            imported.tensors[name] = try Self.edited(tensor) { $0[0] += 1 }
        }
        print("changed prefix value: relative error \(error)")
        #expect(error > 100 * Self.tolerance)
    }

    @Test("a changed DoRA magnitude misses the reference")
    func changedMagnitude() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let (error, _, _) = try run("gpt2_dora") { imported in
            let name = try #require(imported.tensorName(target: "transformer.h.1.mlp.c_fc", role: TensorRole.magnitude))
            let tensor = try #require(imported.tensors[name])
            imported.tensors[name] = try Self.edited(tensor) { $0[3] *= 1.5 }
        }
        print("changed DoRA magnitude: relative error \(error)")
        #expect(error > 100 * Self.tolerance)
    }

    /// Two active LoRA adapters add their updates (PEFT sums active adapters), so an adapter
    /// together with its negation must give the base model's output.
    @Test("a LoRA adapter stacked with its negation reproduces the base output")
    func loraCancels() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        try expectCancels("llama_lora") { imported in
            var negated = imported.adapters[0]
            negated.name += "-negated"
            negated.modules = try negated.modules.map { module in
                var settings = try #require(module.lowRank)
                settings.scale = -settings.scale
                return AdapterModule(target: module.target, change: .lowRank(settings), tensors: module.tensors)
            }
            imported.adapters.append(negated)
        }
    }

    /// IA3 vectors of several adapters multiply (PEFT's ia3_scaling *= ...), so the reciprocal
    /// vectors undo an adapter.
    @Test("an IA3 adapter stacked with its reciprocal reproduces the base output")
    func ia3Cancels() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        try expectCancels("bert_ia3") { imported in
            var inverse = imported.adapters[0]
            inverse.name += "-inverse"
            for (index, module) in inverse.modules.enumerated() {
                let name = module.tensors[TensorRole.ia3Vector]! + "-inverse"
                let vector = try #require(imported.tensors[module.tensors[TensorRole.ia3Vector]!])
                imported.tensors[name] = try Self.edited(vector) { values in values = values.map { 1 / $0 } }
                inverse.modules[index].tensors[TensorRole.ia3Vector] = name
            }
            imported.adapters.append(inverse)
        }
    }

    private func expectCancels(_ caseName: String, edit: (inout ImportedCase) throws -> Void) throws {
        let reference = try RuntimeFixtures.reference(case: caseName)
        let model = try RuntimeFixtures.model(try #require(reference.metadata["base"]))
        var imported = try ImportedCase.load(case: caseName)
        try edit(&imported)
        let adapters = try AdapterSet(adapters: imported.adapters, model: model, tensor: imported.tensor)
        let output = try model.forward(inputIds: reference.inputIds, adapters: adapters)
        let error = RuntimeFixtures.relativeError(output, reference.outputBase)
        print("\(caseName) with its inverse vs base: relative error \(error)")
        #expect(error <= Self.tolerance)
    }
}
