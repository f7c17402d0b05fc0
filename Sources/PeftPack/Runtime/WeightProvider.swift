/// A source of named checkpoint tensors (a safetensors file, a sharded set, a pack's base section).
/// The runtime reads each tensor once at load and converts it to fp32.
public protocol WeightProvider {
    /// Every tensor name the source holds, so loading can report the ones the model does not use.
    var names: [String] { get }
    /// The tensor with this exact name, or nil when the source has none.
    func tensor(_ name: String) throws -> HostTensor?
}
