import Foundation
import Testing
@testable import PeftPack

/// Forward-pass timing of a MiniLM-sized BERT (6 layers, hidden 384, 12 heads, FFN 1536) with
/// random weights on 3 × 17 tokens. A measurement, not a check: it runs only when
/// PEFTPACK_RUNTIME_BENCH is set, e.g.
/// `PEFTPACK_RUNTIME_BENCH=1 swift test -c release --filter RuntimeBenchmark`.
@Suite("Runtime benchmark")
struct RuntimeBenchmarkTests {
    /// SplitMix64: cheap reproducible numbers (the system generator makes setup dominate).
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    struct RandomWeights: WeightProvider {
        var tensors: [String: HostTensor] = [:]
        var names: [String] { Array(tensors.keys) }
        func tensor(_ name: String) throws -> HostTensor? { tensors[name] }

        mutating func add(_ name: String, _ shape: [Int], generator: inout SplitMix) {
            let count = shape.reduce(1, *)
            let values = (0..<count).map { _ in Float.random(in: -0.05...0.05, using: &generator) }
            tensors[name] = HostTensor(floats: values, shape: shape, dtype: .f32)
        }
    }

    static let configJSON = """
        {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
         "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512}
        """

    static func miniLM() throws -> TransformerModel {
        let config = try ModelConfig.decode(Data(configJSON.utf8))
        var weights = RandomWeights()
        var generator = SplitMix()
        let h = 384, inner = 1536
        weights.add("embeddings.word_embeddings.weight", [30522, h], generator: &generator)
        weights.add("embeddings.position_embeddings.weight", [512, h], generator: &generator)
        weights.add("embeddings.token_type_embeddings.weight", [2, h], generator: &generator)
        for norm in ["embeddings.LayerNorm"] + (0..<6).flatMap({ ["encoder.layer.\($0).attention.output.LayerNorm",
                                                                  "encoder.layer.\($0).output.LayerNorm"] }) {
            weights.add("\(norm).weight", [h], generator: &generator)
            weights.add("\(norm).bias", [h], generator: &generator)
        }
        for layer in 0..<6 {
            let p = "encoder.layer.\(layer)"
            let linears: [(String, Int, Int)] = [
                ("attention.self.query", h, h), ("attention.self.key", h, h), ("attention.self.value", h, h),
                ("attention.output.dense", h, h), ("intermediate.dense", h, inner), ("output.dense", inner, h),
            ]
            for (name, input, output) in linears {
                weights.add("\(p).\(name).weight", [output, input], generator: &generator)
                weights.add("\(p).\(name).bias", [output], generator: &generator)
            }
        }
        return try TransformerModel.load(config: config, weights: weights)
    }

    @Test("MiniLM-sized forward, 3 × 17 tokens",
          .enabled(if: ProcessInfo.processInfo.environment["PEFTPACK_RUNTIME_BENCH"] != nil))
    func miniLMForward() throws {
        let model = try Self.miniLM()
        let ids = (0..<3).map { row in (0..<17).map { (row * 131 + $0 * 17) % 30522 } }

        var generator = SplitMix()
        var tensors: [String: HostTensor] = [:]
        var modules: [AdapterModule] = []
        for layer in 0..<6 {
            for target in ["query", "value"] {
                let path = "encoder.layer.\(layer).attention.self.\(target)"
                for (role, shape) in [(TensorRole.loraA, [8, 384]), (TensorRole.loraB, [384, 8])] {
                    let values = (0..<shape[0] * shape[1]).map { _ in Float.random(in: -0.05...0.05, using: &generator) }
                    tensors["\(path)/\(role)"] = HostTensor(floats: values, shape: shape, dtype: .f32)
                }
                modules.append(AdapterModule(target: path, change: .lowRank(LowRankModule(layout: .linear, rank: 8, scale: 2)),
                                             tensors: [TensorRole.loraA: "\(path)/A", TensorRole.loraB: "\(path)/B"]))
            }
        }
        let lora = try AdapterSet(adapters: [Adapter(name: "bench", kind: .lora, modules: modules)], model: model) {
            tensors[$0]!
        }

        for (label, adapters) in [("base", AdapterSet?.none), ("LoRA r=8 on query/value", lora)] {
            _ = try model.forward(inputIds: ids, adapters: adapters)
            var times: [Double] = []
            for _ in 0..<30 {
                let start = ContinuousClock.now
                _ = try model.forward(inputIds: ids, adapters: adapters)
                let elapsed = ContinuousClock.now - start
                times.append(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1e3)
            }
            times.sort()
            print("MiniLM forward (\(label)): median \(times[times.count / 2]) ms, min \(times[0]) ms")
        }
    }
}
