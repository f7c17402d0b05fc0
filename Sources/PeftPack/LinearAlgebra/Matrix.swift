/// A dense row-major fp32 matrix.
public struct Matrix: Equatable, Sendable {
    public var rows: Int
    public var cols: Int
    public var values: [Float]

    public init(rows: Int, cols: Int, values: [Float]) {
        precondition(values.count == rows * cols, "matrix values do not match \(rows)×\(cols)")
        self.rows = rows
        self.cols = cols
        self.values = values
    }

    public init(zeros rows: Int, _ cols: Int) {
        self.init(rows: rows, cols: cols, values: [Float](repeating: 0, count: rows * cols))
    }

    public subscript(row: Int, col: Int) -> Float {
        get { values[row * cols + col] }
        set { values[row * cols + col] = newValue }
    }

    public var transposed: Matrix {
        var out = Matrix(zeros: cols, rows)
        for row in 0..<rows {
            for col in 0..<cols { out.values[col * rows + row] = values[row * cols + col] }
        }
        return out
    }

    /// ‖M‖_F accumulated in fp64.
    public var frobeniusNorm: Double {
        values.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
    }
}
