import PeftPack

/// --weight values must be finite numbers. Checked when the command runs rather than in
/// `validate()` so the refusal is one line with exit 2 like every other input error (the parser's
/// usage errors add the usage text); the library refuses them too.
func checkFiniteWeights(_ weights: [Double]) throws {
    if let bad = weights.first(where: { !$0.isFinite }) {
        throw UsageError("--weight \(bad) is not a finite number")
    }
}
