/// Tensors a checkpoint stores in a form of its own (bitsandbytes quantization, a GGUF model),
/// read as their logical values: what `Checkpoint` hands every reader of a base in their place.
public protocol DecodedWeights: WeightProvider, AnyObject {
    /// The logical tensors read through the decoder (the others, if any, are stored as they read).
    var decodedNames: [String] { get }
    /// "bitsandbytes", "gguf".
    var storageFormat: String { get }
    /// How the decoded tensors are stored (a quant type, a ggml type) → how many are.
    var storageKinds: [String: Int] { get }
    /// Bytes the stored form takes.
    var storedBytes: Int { get }
    /// The config.json text the stored form gives, when it carries the config itself (GGUF).
    var configText: String? { get }
    /// `values` (a tensor's logical values, fp32) stored as this form stores `name` and read
    /// back: what a correct requantizing merge would hold. nil when `name` is stored unquantized.
    func requantized(_ name: String, values: [Float]) throws -> [Float]?
    /// How `name` is stored (nf4, int8, Q4_K…); nil when it is stored unquantized.
    func quantizedType(_ name: String) -> String?
}
