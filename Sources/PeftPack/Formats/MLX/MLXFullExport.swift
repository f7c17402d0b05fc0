/// A full fine-tune (whole replacement tensors) as mlx-lm's `full` adapter: each value saved under
/// its model parameter name (mlx-lm's names are transformers' for the families MLX export
/// supports), which load_adapters loads over the model's own. mlx-lm's tied head reads the
/// embedding, so on a tied base the embedding is written only when the head follows it (the pack
/// stores one tensor for both, as extract and MLX import record a tied replacement).
enum MLXFullExport {
    static func export(_ adapter: Adapter, base: BaseModelIdentity, family: Architecture, totalLayers: Int,
                       reader: PackReader) throws -> MLXExporter.Output {
        let file = reader.path, name = "adapter \(adapter.name)"
        var values: [String: String] = [:]
        for module in adapter.modules {
            guard let whole = module.wholeTensor, whole.effect == .replace, let stored = module.tensors[TensorRole.fullValue] else {
                throw InputError(file: file, problem: "\(name) changes \(module.target) by \(module.wholeTensor?.mode.rawValue ?? "a low-rank update"), but an MLX full adapter holds replacement parameters only; merge it instead (peftpack merge)", kind: .notExpressible)
            }
            values[module.target] = stored
        }
        let embedding = family.tokenEmbeddingWeight
        if let head = family.outputHead.map({ "\($0).weight" }), values[embedding] != nil || values[head] != nil {
            guard let tied = base.tieWordEmbeddings else {
                throw InputError(file: file, problem: "records no tie_word_embeddings of its base (a pack older than format 1.2), which decides what mlx-lm's head reads; import the adapter again with its base", kind: .baseNotRecorded)
            }
            if tied {
                guard values[head] == values[embedding] else {
                    throw InputError(file: file, problem: "\(name) replaces the \(values[head] == nil ? "embedding" : "head") of a tied base without the \(values[head] == nil ? "head" : "embedding"), but mlx-lm's tied head is the embedding itself; merge it instead (peftpack merge)", kind: .notExpressible)
                }
                values[head] = nil
            }
        }
        let firstLayer = values.keys.compactMap { family.layerPosition(of: $0)?.layer }.min() ?? totalLayers
        var tensors: [(key: String, tensor: HostTensor)] = []
        for target in values.keys.sorted(by: { $0.localizedStandardCompare($1) == .orderedAscending }) {
            tensors.append((target, try reader.readTensor(values[target]!)))
        }
        let configText = try MLXExporter.config(adapter: adapter, fineTuneType: .full, numLayers: totalLayers - firstLayer, parameters: nil)
        return MLXExporter.Output(configText: configText, tensors: tensors)
    }
}
