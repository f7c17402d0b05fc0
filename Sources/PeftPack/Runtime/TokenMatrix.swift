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
