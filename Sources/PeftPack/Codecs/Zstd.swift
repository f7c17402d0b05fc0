import CZstd
import Foundation

/// The one place that calls libzstd. Every call's return code becomes a typed error.
public enum ZstdError: Error, CustomStringConvertible {
    case compressionFailed(String)
    case corrupt(String)
    case sizeMismatch(declared: UInt64?, expected: Int)

    public var description: String {
        switch self {
        case .compressionFailed(let reason): "zstd compression failed: \(reason)"
        case .corrupt(let reason): "zstd data is corrupt: \(reason)"
        case .sizeMismatch(let declared, let expected):
            "zstd frame declares \(declared.map(String.init) ?? "no") content size, expected \(expected)"
        }
    }
}

/// Compression contexts are expensive to create (their workspace is allocated and cleared), so
/// they are reused: a thread takes one from the pool for the duration of a call.
final class ZstdContextPool: @unchecked Sendable {
    private var free: [OpaquePointer] = []
    private let lock = NSLock()

    func withContext<R>(_ body: (OpaquePointer) throws -> R) throws -> R {
        lock.lock()
        let reused = free.popLast()
        lock.unlock()
        guard let context = reused ?? ZSTD_createCCtx() else { throw ZstdError.compressionFailed("out of memory") }
        defer {
            ZSTD_CCtx_reset(context, ZSTD_reset_session_and_parameters)
            lock.lock()
            free.append(context)
            lock.unlock()
        }
        return try body(context)
    }
}

public enum Zstd {
    static let contexts = ZstdContextPool()

    static func errorName(_ code: Int) -> String {
        String(cString: ZSTD_getErrorName(code))
    }

    static func check(_ code: Int, _ makeError: (String) -> ZstdError) throws -> Int {
        if ZSTD_isError(code) != 0 { throw makeError(errorName(code)) }
        return code
    }

    /// A normal zstd frame at `level` (content size recorded in the frame header).
    public static func compress(_ input: UnsafeRawBufferPointer, level: Int32) throws -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = try contexts.withContext { context in
            try output.withUnsafeMutableBytes { out in
                try check(ZSTD_compressCCtx(context, out.baseAddress, bound, input.baseAddress, input.count, level), ZstdError.compressionFailed)
            }
        }
        output.removeSubrange(written...)
        return output
    }

    /// A zstd frame made only of literals (no matches): each block's literals are Huffman-coded
    /// when that pays. On the exponent plane of float weights this is both smaller and faster than
    /// LZ at any level, because there are no useful matches, only a skewed byte distribution. Any
    /// zstd decoder reads it.
    public static func compressLiteralsOnly(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        try contexts.withContext { context in try compressLiteralsOnly(input, context: context) }
    }

    static func compressLiteralsOnly(_ input: UnsafeRawBufferPointer, context: OpaquePointer) throws -> [UInt8] {
        _ = try check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1), ZstdError.compressionFailed)
        _ = try check(ZSTD_CCtx_setParameter(context, ZSTD_c_experimentalParam5 /* ZSTD_c_literalCompressionMode, a macro Swift cannot import */, Int32(ZSTD_ps_enable.rawValue)), ZstdError.compressionFailed)
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = try output.withUnsafeMutableBytes { out in
            try check(ZSTD_compressSequences(context, out.baseAddress, bound, nil, 0, input.baseAddress, input.count), ZstdError.compressionFailed)
        }
        output.removeSubrange(written...)
        return output
    }

    /// The content size a frame's header declares, or nil when it declares none or is not a frame.
    public static func declaredContentSize(_ frame: UnsafeRawBufferPointer) -> Int? {
        let declared = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        guard declared != ZSTD_CONTENTSIZE_UNKNOWN, declared != ZSTD_CONTENTSIZE_ERROR, declared <= UInt64(Int.max) else { return nil }
        return Int(declared)
    }

    /// Decodes one frame into exactly `output.count` bytes. The frame must declare that content
    /// size and decode to it; anything else is corruption (this is what stops decompression bombs:
    /// the output buffer is sized from the validated index, never from the frame).
    public static func decompress(_ frame: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        let declared = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        guard declared == UInt64(output.count) else {
            let known = declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR ? nil : UInt64(declared)
            throw ZstdError.sizeMismatch(declared: known, expected: output.count)
        }
        let frameSize = ZSTD_findFrameCompressedSize(frame.baseAddress, frame.count)
        guard ZSTD_isError(frameSize) == 0, frameSize == frame.count else {
            throw ZstdError.corrupt("the stream is not exactly one frame")
        }
        let produced = try check(ZSTD_decompress(output.baseAddress, output.count, frame.baseAddress, frame.count), ZstdError.corrupt)
        guard produced == output.count else { throw ZstdError.corrupt("decoded \(produced) bytes, expected \(output.count)") }
    }
}
