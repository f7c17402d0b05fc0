import Foundation
import Testing
@testable import PeftPack

/// Malformed files are refused with one line naming the file (and tensor) and what is wrong,
/// never a crash or an allocation of a claimed size.
@Suite struct SafetensorsMalformedTests {
    /// A valid two-tensor file built by hand, so each test can break one thing.
    static func file(header: String, data: [UInt8], headerLength: UInt64? = nil) -> [UInt8] {
        var length = (headerLength ?? UInt64(header.utf8.count)).littleEndian
        return withUnsafeBytes(of: &length) { Array($0) } + Array(header.utf8) + data
    }

    static let validHeader = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}"#
    static let validData = [UInt8](repeating: 1, count: 11)

    func problem(_ bytes: [UInt8]) -> String? {
        let path = Fixtures.temporaryDirectory() + "/bad.safetensors"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        do {
            _ = try SafetensorsFile(path: path)
            return nil
        } catch let error as InputError {
            #expect(error.description.hasPrefix(path))
            #expect(!error.description.contains("\n"))
            return error.description
        } catch {
            Issue.record("unexpected error type \(error)")
            return nil
        }
    }

    @Test func validFileOpens() {
        #expect(problem(Self.file(header: Self.validHeader, data: Self.validData)) == nil)
    }

    @Test func truncatedFileIsRefused() {
        let bytes = Self.file(header: Self.validHeader, data: Self.validData)
        for length in 0..<bytes.count {
            #expect(problem(Array(bytes[..<length])) != nil, "length \(length)")
        }
    }

    @Test func headerLongerThanFileIsRefused() {
        #expect(problem(Self.file(header: Self.validHeader, data: Self.validData, headerLength: 10_000))?.contains("past the end") == true)
    }

    @Test func hundredGigabyteHeaderClaimIsRefusedWithoutAllocating() {
        #expect(problem(Self.file(header: Self.validHeader, data: Self.validData, headerLength: 100_000_000_000))?.contains("limit") == true)
    }

    @Test func overlappingOffsetsAreRefused() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[5,8]}}"#
        #expect(problem(Self.file(header: header, data: [UInt8](repeating: 0, count: 8)))?.contains("overlaps") == true)
    }

    @Test func gapIsRefused() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[9,12]}}"#
        #expect(problem(Self.file(header: header, data: [UInt8](repeating: 0, count: 12)))?.contains("gap") == true)
    }

    @Test func trailingBytesAreRefused() {
        #expect(problem(Self.file(header: Self.validHeader, data: Self.validData + [0, 0]))?.contains("trailing") == true)
    }

    @Test func unknownDtypeIsRefused() {
        let header = Self.validHeader.replacingOccurrences(of: "U8", with: "Q7")
        #expect(problem(Self.file(header: header, data: Self.validData))?.contains("unknown dtype") == true)
    }

    @Test func shapeSizeMismatchIsRefused() {
        let header = Self.validHeader.replacingOccurrences(of: "[3]", with: "[4]")
        let message = problem(Self.file(header: header, data: Self.validData))
        #expect(message?.contains("tensor b") == true)
        #expect(message?.contains("span") == true)
    }

    @Test func nonUTF8HeaderIsRefused() {
        var bytes = Self.file(header: Self.validHeader, data: Self.validData)
        bytes[10] = 0xFF
        #expect(problem(bytes)?.contains("UTF-8") == true)
    }

    @Test func duplicateKeyIsRefused() {
        let header = #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#
        #expect(problem(Self.file(header: header, data: [0, 0]))?.contains("duplicate key") == true)
    }

    @Test func negativeOrFractionalShapeIsRefused() {
        for shape in ["[-2]", "[2.0]"] {
            let header = #"{"a":{"dtype":"U8","shape":SHAPE,"data_offsets":[0,2]}}"#.replacingOccurrences(of: "SHAPE", with: shape)
            #expect(problem(Self.file(header: header, data: [0, 0]))?.contains("non-negative integers") == true)
        }
    }

    @Test func overflowingShapeIsRefused() {
        let header = #"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,2]}}"#
        #expect(problem(Self.file(header: header, data: [0, 0]))?.contains("overflows") == true)
    }

    @Test func headerThatIsNotAnObjectIsRefused() {
        #expect(problem(Self.file(header: "[1,2]   ", data: []))?.contains("not a JSON object") == true)
        #expect(problem(Self.file(header: "{\"a\":", data: []))?.contains("JSON") == true)
        #expect(problem(Self.file(header: "", data: []))?.contains("JSON") == true)
    }

    /// safetensors 0.8 (checked with `safe_open`) accepts these, so refusing them would reject
    /// files the reference reads.
    @Test func variantsTheReferenceAcceptsOpen() {
        let entries = Self.validHeader.dropFirst().dropLast()
        #expect(problem(Self.file(header: " {" + entries + "}", data: Self.validData)) == nil)
        #expect(problem(Self.file(header: "{\"__metadata__\":null," + entries + "}", data: Self.validData)) == nil)
        let extraField = Self.validHeader.replacingOccurrences(of: "\"data_offsets\":[0,8]", with: "\"data_offsets\":[0,8],\"x\":[1]")
        #expect(problem(Self.file(header: extraField, data: Self.validData)) == nil)
    }

    @Test func fractionalOrExponentOffsetsAreRefused() {
        for offsets in ["[0,8.0]", "[0,8e0]", "[0]", "[0,8,9]"] {
            let header = Self.validHeader.replacingOccurrences(of: "[0,8]", with: offsets)
            #expect(problem(Self.file(header: header, data: Self.validData))?.contains("data_offsets") == true, "\(offsets)")
        }
    }

    @Test func missingFieldIsRefused() {
        let header = Self.validHeader.replacingOccurrences(of: "\"shape\":[2],", with: "")
        #expect(problem(Self.file(header: header, data: Self.validData))?.contains("missing shape") == true)
    }

    @Test func nonStringMetadataIsRefused() {
        let header = #"{"__metadata__":{"format":1},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#
        #expect(problem(Self.file(header: header, data: [0]))?.contains("not a string") == true)
        let notAnObject = #"{"__metadata__":"pt","a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#
        #expect(problem(Self.file(header: notAnObject, data: [0]))?.contains("not an object") == true)
    }

    @Test func indexNamingMissingShardIsRefused() throws {
        let folder = Fixtures.temporaryDirectory()
        let index = #"{"metadata":{"total_size":8},"weight_map":{"a":"model-00001-of-00002.safetensors"}}"#
        try index.write(toFile: folder + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        #expect {
            _ = try Checkpoint(path: folder)
        } throws: { error in
            (error as? InputError)?.description.contains("does not exist") == true
        }
    }

    @Test func indexMissingATensorOfAShardIsRefused() throws {
        let folder = Fixtures.temporaryDirectory()
        FileManager.default.createFile(atPath: folder + "/model-00001-of-00001.safetensors",
                                       contents: Data(Self.file(header: Self.validHeader, data: Self.validData)))
        let index = #"{"weight_map":{"a":"model-00001-of-00001.safetensors"}}"#
        try index.write(toFile: folder + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        #expect {
            _ = try Checkpoint(path: folder)
        } throws: { error in
            (error as? InputError)?.description.contains("tensor b") == true
        }
    }
}
