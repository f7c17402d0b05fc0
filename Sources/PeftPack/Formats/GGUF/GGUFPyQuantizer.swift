/// One block of 32 values of each legacy type, as gguf-py 0.19's numpy code (`gguf/quants.py`,
/// `quantize_blocks`) computes it, step for step in fp32: the scale is the block's value of
/// largest magnitude (the first one on a tie, as argmax picks) divided by −8 or −16, or the range
/// (max − min) divided by 15 or 31; the quant multiplies by the reciprocal `1 / d` (0 when d is 0)
/// rather than dividing, adds 8.5 / 16.5 / 0.5 and truncates, converts to uint8 and only then
/// clips; Q8_0 rounds half away from zero with gguf's `np_roundf` (floor of twice the fraction).
/// Scales and minimums are stored as fp16 rounded to nearest even (`astype(np.float16)`), so an
/// all-zero block of Q4_0/Q5_0 stores d = −0 (0 / −8).
///
/// Inputs are finite; how numpy orders NaN in max/argmax is not reproduced.
enum GGUFPyQuantizer {
    static let elements = 32

    static func q4_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        let d = valueOfLargestMagnitude(x) / -8
        let id = reciprocal(d)
        storeHalf(d, y, at: 0)
        for j in 0..<16 {
            let low = min(numpyByte((x[j] * id + 8.5).rounded(.towardZero)), 15)
            let high = min(numpyByte((x[j + 16] * id + 8.5).rounded(.towardZero)), 15)
            y.storeBytes(of: low | high << 4, toByteOffset: 2 + j, as: UInt8.self)
        }
    }

    static func q4_1(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        let (lowest, highest) = range(x)
        let d = (highest - lowest) / 15
        let id = reciprocal(d)
        storeHalf(d, y, at: 0)
        storeHalf(lowest, y, at: 2)
        for j in 0..<16 {
            let low = min(numpyByte(((x[j] - lowest) * id + 0.5).rounded(.towardZero)), 15)
            let high = min(numpyByte(((x[j + 16] - lowest) * id + 0.5).rounded(.towardZero)), 15)
            y.storeBytes(of: low | high << 4, toByteOffset: 4 + j, as: UInt8.self)
        }
    }

    static func q5_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        let d = valueOfLargestMagnitude(x) / -16
        let id = reciprocal(d)
        storeHalf(d, y, at: 0)
        storeFiveBit(y, at: 2) { j in min(numpyByte((x[j] * id + 16.5).rounded(.towardZero)), 31) }
    }

    static func q5_1(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        let (lowest, highest) = range(x)
        let d = (highest - lowest) / 31
        let id = reciprocal(d)
        storeHalf(d, y, at: 0)
        storeHalf(lowest, y, at: 2)
        storeFiveBit(y, at: 4) { j in min(numpyByte(((x[j] - lowest) * id + 0.5).rounded(.towardZero)), 31) }
    }

    static func q8_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        var largest: Float = 0
        for j in 0..<elements { largest = max(largest, abs(x[j])) }
        let d = largest / 127
        let id = reciprocal(d)
        storeHalf(d, y, at: 0)
        for j in 0..<elements {
            y.storeBytes(of: numpyByte(roundHalfAwayFromZero(x[j] * id)), toByteOffset: 2 + j, as: UInt8.self)
        }
    }

    /// The signed value whose magnitude is largest, the first of equals (`abs(blocks).argmax`).
    @inline(__always)
    static func valueOfLargestMagnitude(_ x: UnsafePointer<Float>) -> Float {
        var value = x[0], magnitude = abs(x[0])
        for j in 1..<elements where abs(x[j]) > magnitude {
            value = x[j]
            magnitude = abs(x[j])
        }
        return value
    }

    @inline(__always)
    static func range(_ x: UnsafePointer<Float>) -> (lowest: Float, highest: Float) {
        var lowest = x[0], highest = x[0]
        for j in 1..<elements {
            lowest = min(lowest, x[j])
            highest = max(highest, x[j])
        }
        return (lowest, highest)
    }

    /// `np.where(d == 0, 0, 1 / d)`: a subnormal d gives an infinite reciprocal, kept.
    @inline(__always)
    static func reciprocal(_ d: Float) -> Float { d == 0 ? 0 : 1 / d }

    /// numpy's float32 → uint8 (and, read as two's complement, int8) cast on x86-64: C's
    /// conversion through a 32-bit integer, whose "invalid" result 0x80000000 for NaN, ±inf and
    /// anything beyond ±2³¹ leaves a low byte of 0; in range the integer wraps modulo 256.
    /// (Every float of magnitude 2³¹ or more is a multiple of 256, so a 64-bit route agrees.)
    @inline(__always)
    static func numpyByte(_ value: Float) -> UInt8 {
        guard value.isFinite, abs(value) < 2_147_483_648 else { return 0 }
        return UInt8(truncatingIfNeeded: Int32(value))
    }

    /// gguf's `np_roundf`: sign(n) · (⌊|n|⌋ + ⌊2 (|n| − ⌊|n|⌋)⌋), every step in fp32.
    @inline(__always)
    static func roundHalfAwayFromZero(_ n: Float) -> Float {
        let a = abs(n), floored = a.rounded(.down)
        let b = floored + (2 * (a - floored)).rounded(.down)
        let sign: Float = n.isNaN ? .nan : (n > 0 ? 1 : (n < 0 ? -1 : 0))
        return sign * b
    }

    @inline(__always)
    static func storeHalf(_ value: Float, _ y: UnsafeMutableRawPointer, at offset: Int) {
        y.storeBytes(of: FloatNarrowing.numpyHalf(value).littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// Q5's layout from the 32 quants (each at most 31): their fifth bits as a little-endian
    /// uint32 at `offset` (np.packbits, little bit order), then 16 bytes holding quant j's low
    /// four bits in the low nibble and quant j + 16's in the high one (its fifth bit shifted out).
    @inline(__always)
    static func storeFiveBit(_ y: UnsafeMutableRawPointer, at offset: Int, _ quant: (Int) -> UInt8) {
        var high: UInt32 = 0
        for j in 0..<16 {
            let first = quant(j), second = quant(j + 16)
            high |= UInt32(first >> 4) << UInt32(j) | UInt32(second >> 4) << UInt32(j + 16)
            y.storeBytes(of: (first & 0x0F) | second &<< 4, toByteOffset: offset + 4 + j, as: UInt8.self)
        }
        y.storeBytes(of: high.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}
