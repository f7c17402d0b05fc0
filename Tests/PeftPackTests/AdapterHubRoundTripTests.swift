import Foundation
import Testing
@testable import PeftPack

/// AdapterHub bottleneck adapters survive import → export unchanged.
@Suite struct AdapterHubRoundTripTests {
    static let cases = ["bert_houlsby", "bert_pfeiffer", "llama_pfeiffer"]

    static func importCase(_ name: String) throws -> (ImportedAdapter, SafetensorsFile, String) {
        let folder = Fixtures.path("cases/\(name)/adapter_safetensors")
        let weights = try SafetensorsFile(path: folder + "/adapter.safetensors")
        let configText = try String(contentsOfFile: folder + "/adapter_config.json", encoding: .utf8)
        let imported = try AdapterHubFormat.importAdapter(name: nil, configText: configText, tensors: weights,
                                                          configFile: folder + "/adapter_config.json", weightsFile: weights.path)
        return (imported, weights, configText)
    }

    @Test(arguments: cases)
    func importThenExportReproducesEveryTensor(caseName: String) throws {
        let (imported, weights, configText) = try Self.importCase(caseName)
        var packTensors: [String: HostTensor] = [:]
        for tensor in imported.tensors { packTensors[tensor.packName] = try tensor.load() }
        let exported = try AdapterHubFormat.export(imported.adapter) { packTensors[$0]! }
        #expect(exported.configText == configText)
        #expect(Set(exported.tensors.map(\.key)) == Set(weights.names))
        for (key, tensor) in exported.tensors {
            #expect(try tensor.bytes == weights.tensor(key).bytes, "\(key)")
        }
    }

    @Test func houlsbyHasTwoAdaptersPerLayerAndPfeifferOne() throws {
        let (houlsby, _, _) = try Self.importCase("bert_houlsby")
        #expect(houlsby.adapter.settings.bottleneckArchitecture == "houlsby")
        #expect(houlsby.adapter.modules.filter { $0.bottleneck?.position == .afterAttention }.count == 2)
        #expect(houlsby.adapter.modules.filter { $0.bottleneck?.position == .afterFeedForward }.count == 2)
        let (pfeiffer, _, _) = try Self.importCase("llama_pfeiffer")
        #expect(pfeiffer.adapter.settings.bottleneckArchitecture == "pfeiffer")
        #expect(pfeiffer.adapter.modules.map(\.layer) == [0, 1])
        #expect(pfeiffer.adapter.modules.allSatisfy { $0.bottleneck?.position == .afterFeedForward })
        #expect(pfeiffer.adapter.settings.nonLinearity == "relu")
    }

    @Test func unsupportedOptionIsRefusedByName() throws {
        let folder = Fixtures.path("cases/bert_pfeiffer/adapter_safetensors")
        let configText = try String(contentsOfFile: folder + "/adapter_config.json", encoding: .utf8)
            .replacingOccurrences(of: "\"use_gating\": false", with: "\"use_gating\": true")
        let weights = try SafetensorsFile(path: folder + "/adapter.safetensors")
        #expect {
            _ = try AdapterHubFormat.importAdapter(name: nil, configText: configText, tensors: weights, configFile: "adapter_config.json", weightsFile: weights.path)
        } throws: { "\($0)".contains("use_gating") }
    }
}
