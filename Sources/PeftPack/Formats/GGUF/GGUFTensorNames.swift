/// llama.cpp's tensor names of a model mapped back to the checkpoint names transformers saves,
/// through the family's `LlamaCppNaming` and the llama.cpp names of its layer modules (the table
/// GGUF LoRA export and import use).
enum GGUFTensorNames {
    /// The checkpoint name of a llama.cpp tensor ("blk.0.attn_q.weight" →
    /// "model.layers.0.self_attn.q_proj.weight"), with the layer module when it is an adaptable
    /// one; nil for a tensor the family has no counterpart of.
    static func checkpointName(gguf name: String, family: Architecture) -> (name: String, module: LayerModule?)? {
        guard let naming = family.llamaCpp, let dot = name.lastIndex(of: ".") else { return nil }
        let base = String(name[..<dot]), parameter = String(name[name.index(after: dot)...])
        guard parameter == "weight" || parameter == "bias" else { return nil }
        if let (module, layerModule) = GGUFLoRA.moduleName(gguf: base, family: family) {
            return ("\(module).\(parameter)", layerModule.suffix == family.outputHead ? nil : layerModule)
        }
        if let path = naming.modelTensors?[base] { return ("\(family.checkpointPrefix).\(path).\(parameter)", nil) }
        let parts = base.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), let norm = naming.layerNorms?[String(parts[2])] else { return nil }
        return ("\(family.checkpointPrefix).\(family.layerModulePath(layer, norm)).\(parameter)", nil)
    }
}
