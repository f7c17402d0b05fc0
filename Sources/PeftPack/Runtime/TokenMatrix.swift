/// A dense row-major fp32 matrix: the activations of every token of a batch, one row per token.
struct TokenMatrix: Sendable {
    var rows: Int
    var cols: Int
    var values: [Float]

    init(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        values = [Float](repeating: 0, count: rows * cols)
    }

    init(rows: Int, cols: Int, values: [Float]) {
        precondition(values.count == rows * cols, "matrix values do not match \(rows) × \(cols)")
        self.rows = rows
        self.cols = cols
        self.values = values
    }

    /// A copy of the columns `range` of every row (one part of a fused projection's output).
    func columns(_ range: Range<Int>) -> TokenMatrix {
        var part = TokenMatrix(rows: rows, cols: range.count)
        for row in 0..<rows {
            part.values.replaceSubrange(row * range.count..<(row + 1) * range.count,
                                        with: values[(row * cols + range.lowerBound)..<(row * cols + range.upperBound)])
        }
        return part
    }

    /// Element-wise `self += other`; both have the same shape.
    mutating func add(_ other: TokenMatrix) {
        precondition(rows == other.rows && cols == other.cols)
        values.withUnsafeMutableBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                for i in 0..<a.count { a[i] += b[i] }
            }
        }
    }

    /// Adds `vector` to every row (a bias).
    mutating func addRowVector(_ vector: [Float]) {
        precondition(vector.count == cols)
        let cols = cols
        values.withUnsafeMutableBufferPointer { a in
            vector.withUnsafeBufferPointer { v in
                for row in 0..<rows {
                    let base = row * cols
                    for col in 0..<cols { a[base + col] += v[col] }
                }
            }
        }
    }

    /// Multiplies every row element-wise by `vector` (a per-feature scale).
    mutating func scaleColumns(by vector: [Float]) {
        precondition(vector.count == cols)
        let cols = cols
        values.withUnsafeMutableBufferPointer { a in
            vector.withUnsafeBufferPointer { v in
                for row in 0..<rows {
                    let base = row * cols
                    for col in 0..<cols { a[base + col] *= v[col] }
                }
            }
        }
    }

    func scalingColumns(by vector: [Float]) -> TokenMatrix {
        var copy = self
        copy.scaleColumns(by: vector)
        return copy
    }
}
