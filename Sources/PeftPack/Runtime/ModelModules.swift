/// A linear layer of the base model: nn.Linear (weight [out, in]) or GPT-2's Conv1D ([in, out]).
struct LinearModule: Sendable {
    /// Module path inside the base model, e.g. "layers.0.self_attn.q_proj", or "lm_head".
    let path: String
    let weight: ParameterID
    let bias: ParameterID?
    let inFeatures: Int
    let outFeatures: Int
    let storedTransposed: Bool

    var orientation: WeightOrientation {
        WeightOrientation(out: outFeatures, inputs: inFeatures, layout: storedTransposed ? .conv1d : .linear)
    }
}

/// An nn.Embedding: weight [count, dim], looked up by row.
struct EmbeddingModule: Sendable {
    let path: String
    let weight: ParameterID
    let count: Int
    let dim: Int
}

/// LayerNorm (weight and bias) or RMSNorm (weight only; Gemma's scales by 1 + weight).
struct NormWeights: Sendable {
    let weight: ParameterID
    let bias: ParameterID?
    var offsetByOne = false
}

enum ModuleReference: Sendable, Equatable {
    case linear(Int)
    case embedding(Int)
}

/// Collects a model's modules while loading their parameters.
struct ModelBuilder {
    var loader: ModelWeightLoader
    private(set) var linears: [LinearModule] = []
    private(set) var embeddings: [EmbeddingModule] = []
    private(set) var modules: [String: ModuleReference] = [:]

    init(provider: any WeightProvider, prefix: String, residency: WeightResidency) {
        loader = ModelWeightLoader(provider: provider, prefix: prefix, residency: residency)
    }

    /// A linear layer at `path`; `prefixed` is false for heads outside the base model (lm_head).
    mutating func linear(_ path: String, in inFeatures: Int, out outFeatures: Int, bias: Bool,
                         conv1d: Bool = false, prefixed: Bool = true) throws -> Int {
        let shape = conv1d ? [inFeatures, outFeatures] : [outFeatures, inFeatures]
        let weight = try loader.require("\(path).weight", shape, prefixed: prefixed)
        let biasID = bias ? try loader.require("\(path).bias", [outFeatures], prefixed: prefixed) : nil
        return register(LinearModule(path: path, weight: weight, bias: biasID, inFeatures: inFeatures,
                                     outFeatures: outFeatures, storedTransposed: conv1d))
    }

    /// A linear layer only some checkpoints have (BERT's pooler); nil when its weight is absent.
    mutating func optionalLinear(_ path: String, in inFeatures: Int, out outFeatures: Int) throws -> Int? {
        guard let weight = try loader.optional("\(path).weight", [outFeatures, inFeatures]) else { return nil }
        let bias = try loader.require("\(path).bias", [outFeatures])
        return register(LinearModule(path: path, weight: weight, bias: bias, inFeatures: inFeatures,
                                     outFeatures: outFeatures, storedTransposed: false))
    }

    /// The output head. Tied heads share the embedding's storage under their own parameter name,
    /// so that a full replacement of the head (PEFT modules_to_save) leaves the embedding alone.
    mutating func head(_ path: String, embedding index: Int, tied: Bool) throws -> Int {
        let embedding = embeddings[index]
        guard tied else {
            return try linear(path, in: embedding.dim, out: embedding.count, bias: false, prefixed: false)
        }
        loader.ignore { $0 == "\(path).weight" }
        let weight = loader.alias("\(path).weight", of: embedding.weight)
        return register(LinearModule(path: path, weight: weight, bias: nil, inFeatures: embedding.dim,
                                     outFeatures: embedding.count, storedTransposed: false))
    }

    mutating func embedding(_ path: String, count: Int, dim: Int) throws -> Int {
        let weight = try loader.require("\(path).weight", [count, dim])
        modules[path] = .embedding(embeddings.count)
        embeddings.append(EmbeddingModule(path: path, weight: weight, count: count, dim: dim))
        return embeddings.count - 1
    }

    mutating func layerNorm(_ path: String, dim: Int) throws -> NormWeights {
        NormWeights(weight: try loader.require("\(path).weight", [dim]),
                    bias: try loader.require("\(path).bias", [dim]))
    }

    mutating func rmsNorm(_ path: String, dim: Int, offsetByOne: Bool = false) throws -> NormWeights {
        NormWeights(weight: try loader.require("\(path).weight", [dim]), bias: nil, offsetByOne: offsetByOne)
    }

    mutating func parameter(_ name: String, _ shape: [Int]) throws -> ParameterID {
        try loader.require(name, shape)
    }

    private mutating func register(_ module: LinearModule) -> Int {
        modules[module.path] = .linear(linears.count)
        linears.append(module)
        return linears.count - 1
    }
}
