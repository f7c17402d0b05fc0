import Foundation
import PeftPack

/// Measures one operation on one file, best of N runs, and prints a JSON line:
///   peftpack-bench read FILE          mmap + touch every tensor byte (XXH3 over each tensor)
///   peftpack-bench convert FILE       every BF16/F16 tensor widened to fp32
///   peftpack-bench pack FILE OUT      every tensor of a safetensors file into a pack
///   peftpack-bench unpack PACK        every tensor of a pack decoded
func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func best(_ runs: Int, _ body: () throws -> Void) rethrows -> Double {
    var result = Double.infinity
    for _ in 0..<runs { result = min(result, try seconds(body)) }
    return result
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: peftpack-bench read|convert|pack|unpack FILE [OUT]\n".utf8))
    exit(2)
}
let operation = arguments[1], path = arguments[2]
let runs = Int(ProcessInfo.processInfo.environment["BENCH_RUNS"] ?? "3") ?? 3
var bytes = 0
var checksum: UInt64 = 0
var time = 0.0

switch operation {
case "read":
    time = try best(runs) {
        let file = try Checkpoint(path: path)
        bytes = 0
        for name in file.names {
            try file.withBytes(name) { raw in
                checksum ^= XXH3.hash64(raw)
                bytes += raw.count
            }
        }
    }
case "convert":
    let file = try Checkpoint(path: path)
    let names = file.names.filter { [.bf16, .f16].contains(file.info($0)!.dtype) }
    var output = [Float]()
    time = try best(runs) {
        bytes = 0
        for name in names {
            let info = file.info(name)!
            let count = info.elementCount!
            if output.count < count { output = [Float](repeating: 0, count: count) }
            try file.withBytes(name) { raw in
                output.withUnsafeMutableBufferPointer { DTypeConversion.toFloat32(raw, dtype: info.dtype, into: UnsafeMutableBufferPointer(rebasing: $0[0..<count])) }
            }
            bytes += count * info.dtype.byteSize
        }
    }
case "pack":
    let output = arguments[3]
    let level = Int32(ProcessInfo.processInfo.environment["BENCH_LEVEL"] ?? "3") ?? 3
    time = try best(runs) {
        let file = try Checkpoint(path: path)
        let threads = Int(ProcessInfo.processInfo.environment["BENCH_THREADS"] ?? "") ?? ProcessInfo.processInfo.activeProcessorCount
        let writer = try PackWriter(destination: output, options: .init(level: level, threads: threads))
        bytes = 0
        for name in file.names {
            let info = file.info(name)!
            try file.withBytes(name) { try writer.append(name: name, dtype: info.dtype, shape: info.shape, bytes: $0) }
            bytes += info.byteCount!
        }
        try writer.finish(document: StrictJSON.encoding(PackDocument()))
    }
    let stored = try FileManager.default.attributesOfItem(atPath: output)[.size] as! Int
    print("{\"operation\":\"pack\",\"bytes\":\(bytes),\"stored\":\(stored),\"seconds\":\(time),\"gb_per_s\":\(Double(bytes) / time / 1e9)}")
    exit(0)
case "unpack":
    time = try best(runs) {
        let reader = try PackReader(path: path)
        bytes = 0
        for entry in reader.tensors {
            let tensor = try reader.readTensor(entry.name)
            bytes += tensor.bytes.count
        }
    }
default:
    FileHandle.standardError.write(Data("unknown operation \(operation)\n".utf8))
    exit(2)
}
print("{\"operation\":\"\(operation)\",\"bytes\":\(bytes),\"seconds\":\(time),\"gb_per_s\":\(Double(bytes) / time / 1e9)}")
