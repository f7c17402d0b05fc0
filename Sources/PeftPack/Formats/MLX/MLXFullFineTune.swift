import Foundation

/// mlx-lm's full fine-tune (`fine_tune_type` full): lora.py's train_model unfreezes the last
/// num_layers layers and saves `model.trainable_parameters()` under the model's own names, and
/// load_adapters loads any parameter of the model with the model's shape. Each saved parameter is
/// a whole-tensor module that replaces the base's.
enum MLXFullFineTune {
    static func importAdapter(_ weights: SafetensorsFile, file: String, name: String, source: AdapterSource, base: BaseModel?) throws -> ImportedAdapter {
        guard !weights.names.isEmpty else { throw InputError(file: file, problem: "holds no trained parameters") }
        var modules: [AdapterModule] = []
        var tensors: [ImportedTensor] = []
        for key in weights.names.sorted(by: { $0.localizedStandardCompare($1) == .orderedAscending }) {
            let info = weights.info(key)!
            guard info.dtype.isFloatingPoint else {
                throw InputError(file: file, tensor: key, problem: "is \(info.dtype.rawValue), not a trained floating-point parameter")
            }
            var target = key
            if let base {
                if let tie = base.tie, key == tie.head {
                    throw InputError(file: file, tensor: key, problem: "is a head, but the base at \(base.folder) ties it to \(tie.embedding), so mlx-lm's model has no such parameter")
                }
                guard let resolved = base.resolve(key), let stored = base.info(resolved) else {
                    throw InputError(file: file, tensor: key, problem: "is not a parameter of the base at \(base.folder), so mlx-lm would not load it")
                }
                guard stored.shape == info.shape else {
                    throw InputError(file: file, tensor: key, problem: "has shape \(Shape.describe(info.shape)) but the base's \(resolved) is \(Shape.describe(stored.shape))")
                }
                target = resolved
            }
            let packName = AdapterModule.tensorName(adapter: name, target: target, role: TensorRole.fullValue)
            let change = ModuleChange.wholeTensor(WholeTensorModule(.replace, sourceName: key))
            modules.append(AdapterModule(target: target, change: change, tensors: [TensorRole.fullValue: packName]))
            if let tie = base?.tie, target == tie.embedding {
                // The tied head is embed_tokens.as_linear: it reads the trained embedding too.
                modules.append(AdapterModule(target: tie.head, change: change, tensors: [TensorRole.fullValue: packName]))
            }
            tensors.append(ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: info.dtype, shape: info.shape)) {
                try weights.tensor(key)
            })
        }
        return ImportedAdapter(adapter: Adapter(name: name, kind: .full, source: source, modules: modules), tensors: tensors)
    }
}
