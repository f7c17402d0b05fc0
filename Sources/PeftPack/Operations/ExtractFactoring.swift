import Foundation

/// Extract's compute step: each changed weight's ΔW loaded, factored by a truncated SVD and given
/// its rank, on every core, in module order.
extension Extract {
    /// One 2-D weight to factor, in the orientation the SVD sees (the stored one).
    struct Candidate {
        var tensor: String
        var shape: [Int]
        var layout: WeightLayout
        var delta: Matrix
        var totalEnergy: Double
    }

    struct Factored {
        var candidate: Candidate
        var triplets: SingularTriplets
        var rank: Int
    }

    static func loadCandidate(_ name: String, layout: WeightLayout, base: Checkpoint, finetuned: Checkpoint) throws -> Candidate {
        let info = base.info(name)!, count = info.elementCount ?? 0
        // ΔW in one fp32 array, filled a window at a time straight from the two mapped files, whose
        // pages are dropped behind: per core, one tensor-sized array is all the memory it takes.
        let finetunedType = finetuned.info(name)!.dtype, baseType = base.info(name)!.dtype
        let window = 1 << 18
        var scratch = [Float](repeating: 0, count: min(window, count))
        let values = try [Float](unsafeUninitializedCapacity: count) { delta, initialized in
            try finetuned.withBytes(name) { tuned in
                try base.withBytes(name) { original in
                    scratch.withUnsafeMutableBufferPointer { widenedBase in
                        var start = 0
                        while start < count {
                            let n = min(window, count - start)
                            let tunedBytes = (start * finetunedType.byteSize)..<((start + n) * finetunedType.byteSize)
                            let baseBytes = (start * baseType.byteSize)..<((start + n) * baseType.byteSize)
                            DTypeConversion.toFloat32(UnsafeRawBufferPointer(rebasing: tuned[tunedBytes]), dtype: finetunedType,
                                                      into: UnsafeMutableBufferPointer(rebasing: delta[start..<(start + n)]))
                            DTypeConversion.toFloat32(UnsafeRawBufferPointer(rebasing: original[baseBytes]), dtype: baseType,
                                                      into: UnsafeMutableBufferPointer(rebasing: widenedBase[0..<n]))
                            for index in 0..<n { delta[start + index] -= widenedBase[index] }
                            finetuned.releasePages(name, bytes: tunedBytes)
                            base.releasePages(name, bytes: baseBytes)
                            start += n
                        }
                    }
                }
            }
            initialized = count
        }
        let energy = values.withUnsafeBufferPointer { BLAS.squaredNorm($0) }
        if !energy.isFinite {
            // NaN/Inf reach the squared norm; LAPACK would refuse the matrix with a bare code.
            try values.withUnsafeBytes { try FiniteValues.checkResult($0, dtype: .f32, name: name, what: "ΔW = fine-tune − base (the fine-tune or the base holds NaN/Inf there)") }
        }
        return Candidate(tensor: name, shape: info.shape, layout: layout,
                         delta: Matrix(rows: info.shape[0], cols: info.shape[1], values: values), totalEnergy: energy)
    }

    /// Factors one delta and picks its rank under a per-matrix rule (for a budget, the rank is
    /// decided later across all modules; the triplets kept are the cap).
    static func factor(_ candidate: Candidate, options: Options, seed: UInt64) throws -> Factored {
        let smaller = min(candidate.delta.rows, candidate.delta.cols)
        let cap = min(smaller, options.maxRank ?? smaller)
        func sketch(_ width: Int) throws -> SingularTriplets {
            options.exact ? try TruncatedSVD.exact(candidate.delta)
                : try TruncatedSVD.randomized(candidate.delta, rank: width, oversample: options.oversample,
                                              powerIterations: options.powerIterations, seed: seed)
        }
        switch options.rule {
        case .fixed(let rank):
            let rank = min(rank, cap)
            return Factored(candidate: candidate, triplets: try sketch(rank), rank: rank)
        case .budget:
            let width = min(cap, options.maxRank ?? 256)
            return Factored(candidate: candidate, triplets: try sketch(width), rank: width)
        case .energy, .maxError:
            var width = min(cap, 64)
            while true {
                let triplets = try sketch(width)
                // Only the first `width` values of a randomized sketch are trusted; an exact SVD
                // has them all.
                let trusted = triplets.exact ? min(cap, triplets.s.count) : min(width, triplets.s.count)
                if case .maxError(let error) = options.rule {
                    let errors = relativeErrors(triplets, totalEnergy: candidate.totalEnergy)
                    if let rank = errors.indices.dropFirst().prefix(trusted).first(where: { errors[$0] <= error }) {
                        return Factored(candidate: candidate, triplets: triplets, rank: rank)
                    }
                } else if case .energy(let share) = options.rule {
                    let target = share * candidate.totalEnergy
                    var kept = 0.0
                    for (index, value) in triplets.s.prefix(trusted).enumerated() {
                        kept += Double(value) * Double(value)
                        if kept >= target * (1 - 1e-12) {
                            return Factored(candidate: candidate, triplets: triplets, rank: index + 1)
                        }
                    }
                }
                if triplets.exact || width >= cap {
                    return Factored(candidate: candidate, triplets: triplets, rank: trusted)
                }
                width = min(cap, 2 * width)
            }
        }
    }

    /// ‖ΔW − B·A‖_F / ‖ΔW‖_F of the rank-`rank` truncation, in fp64. With every singular value at
    /// hand it is √(Σ_{i>r} sᵢ²) / √(Σ sᵢ²) (Eckart–Young) from the discarded values themselves:
    /// √(1 − kept/total) cancels near full rank, where fp32 singular values leave ~1e-7 of noise
    /// in the ratio, so it reported 3e-4…7e-4 for a true 1e-6. A randomized sketch has only the
    /// leading values, so its error is what they leave of the total, √(1 − kept/total).
    static func relativeError(_ triplets: SingularTriplets, rank: Int, totalEnergy: Double) -> Double {
        relativeErrors(triplets, totalEnergy: totalEnergy)[min(rank, triplets.s.count)]
    }

    /// `relativeError` for every rank 0…s.count at once, index = rank.
    static func relativeErrors(_ triplets: SingularTriplets, totalEnergy: Double) -> [Double] {
        let squares = triplets.s.map { Double($0) * Double($0) }
        if triplets.exact {
            var discarded = [Double](repeating: 0, count: squares.count + 1)
            // From the smallest value up, so each tail is summed from its own terms.
            for rank in squares.indices.reversed() { discarded[rank] = discarded[rank + 1] + squares[rank] }
            let total = discarded[0]
            return discarded.map { total > 0 ? ($0 / total).squareRoot() : 0 }
        }
        var errors: [Double] = []
        var kept = 0.0
        for rank in 0...squares.count {
            errors.append(totalEnergy > 0 ? max(0, 1 - kept / totalEnergy).squareRoot() : 0)
            if rank < squares.count { kept += squares[rank] }
        }
        return errors
    }

    /// The leading `rank` singular vectors. Every singular value stays: the truncation's error is
    /// computed from the discarded ones (`relativeError`).
    static func truncate(_ triplets: SingularTriplets, to rank: Int) -> SingularTriplets {
        guard rank < triplets.u.cols else { return triplets }
        var u = Matrix(zeros: triplets.u.rows, rank)
        for row in 0..<u.rows {
            for col in 0..<rank { u[row, col] = triplets.u[row, col] }
        }
        let vt = Matrix(rows: rank, cols: triplets.vt.cols, values: Array(triplets.vt.values.prefix(rank * triplets.vt.cols)))
        return SingularTriplets(u: u, s: triplets.s, vt: vt, exact: triplets.exact)
    }

    /// Greedy allocation: every singular value removes s² of squared error for (rows + cols)
    /// parameters; taking them in order of s²/(rows + cols) while they fit is optimal for this
    /// separable problem (each module's gains decrease with rank, so the order keeps prefixes).
    static func allocateBudget(_ factored: inout [Factored], parameters: Int) {
        var items: [(gain: Double, module: Int, cost: Int)] = []
        for (module, item) in factored.enumerated() {
            let cost = item.candidate.shape[0] + item.candidate.shape[1]
            let trusted = item.triplets.exact ? item.rank : min(item.rank, item.triplets.s.count)
            for value in item.triplets.s.prefix(trusted) {
                items.append((Double(value) * Double(value) / Double(cost), module, cost))
            }
        }
        items.sort { $0.gain > $1.gain }
        var ranks = [Int](repeating: 0, count: factored.count)
        var remaining = parameters
        for item in items where item.cost <= remaining {
            ranks[item.module] += 1
            remaining -= item.cost
        }
        for index in factored.indices { factored[index].rank = ranks[index] }
    }

    /// B (out×r) and A (r×in) in PEFT's orientation from the stored-orientation SVD, with √S on
    /// each side. For layouts stored transposed (Conv1D, embeddings) the stored delta is (B·A)ᵀ, so
    /// U and V swap roles.
    static func loraFactors(_ triplets: SingularTriplets, rank: Int, layout: WeightLayout) -> (a: Matrix, b: Matrix) {
        let roots = triplets.s.prefix(rank).map { $0.squareRoot() }
        var left = Matrix(zeros: triplets.u.rows, rank)          // U·√S
        for row in 0..<left.rows {
            for col in 0..<rank { left[row, col] = triplets.u[row, col] * roots[col] }
        }
        var right = Matrix(zeros: rank, triplets.vt.cols)       // √S·Vᵀ
        for row in 0..<rank {
            for col in 0..<right.cols { right[row, col] = triplets.vt[row, col] * roots[row] }
        }
        if layout == .linear { return (a: right, b: left) }
        return (a: left.transposed, b: right.transposed)
    }

    /// Factors every delta, ranks them together within `parameters` (allocateBudget) and hands
    /// each module, with its rank (0: left out), to `emit` in module order. `progress` counts the
    /// matrices factored over both passes.
    static func factorWithinBudget(_ names: [(name: String, layout: WeightLayout)], parameters: Int, passes: Int,
                                   base: Checkpoint, finetuned: Checkpoint, options: Options,
                                   emit: (Factored) throws -> Void, progress: (Int) -> Void) throws {
        var factored: [Factored] = []
        try factorAll(names, base: base, finetuned: finetuned, options: options, emit: { _, item in
            var kept = item
            if passes == 2 {
                kept.triplets = SingularTriplets(u: Matrix(zeros: 0, 0), s: item.triplets.s, vt: Matrix(zeros: 0, 0), exact: item.triplets.exact)
            }
            factored.append(kept)
        }, progress: progress)
        allocateBudget(&factored, parameters: parameters)
        if passes == 1 {
            for index in factored.indices {
                let item = factored[index]
                try emit(Factored(candidate: item.candidate, triplets: truncate(item.triplets, to: item.rank), rank: item.rank))
                factored[index].triplets = SingularTriplets(u: Matrix(zeros: 0, 0), s: [], vt: Matrix(zeros: 0, 0), exact: false)
            }
            return
        }
        let ranked = factored.indices.filter { factored[$0].rank > 0 }
        var next = 0
        try factorAll(ranked.map { names[$0] }, base: base, finetuned: finetuned, options: options,
                      ranks: ranked.map { factored[$0].rank }, seeds: ranked, emit: { position, item in
            // Modules left out still pass through `emit`, in their place.
            while next < ranked[position] { try emit(factored[next]); next += 1 }
            try emit(item)
            next += 1
        }, progress: { progress(names.count + $0) })
        while next < factored.count { try emit(factored[next]); next += 1 }
        progress(2 * names.count)
    }

    /// Factors every delta, one matrix per core at a time with single-threaded BLAS: the
    /// matrices are too thin (k = rank + oversample) for OpenBLAS's threads to pay off, and the
    /// conversions, subtraction and QR between the products parallelise this way too. Each result
    /// goes to `emit` in the order of `names` (so the pack does not depend on which core finished
    /// first) as soon as its predecessors have; memory holds one delta per core plus the results
    /// waiting for a slower predecessor.
    /// `ranks`: a fixed rank per name instead of the options' rule (the second pass of a budget);
    /// `seeds`: the position each name's random sketch is seeded by (its place among all modules).
    static func factorAll(_ names: [(name: String, layout: WeightLayout)], base: Checkpoint, finetuned: Checkpoint, options: Options,
                          ranks: [Int]? = nil, seeds: [Int]? = nil,
                          emit: (Int, Factored) throws -> Void, progress: (Int) -> Void) throws {
        let blasThreads = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = blasThreads }
        let lock = NSLock()
        var next = 0, finished = 0, nextToEmit = 0
        var waiting: [Int: Factored] = [:]
        var failure: Error?
        let workers = max(1, min(Cores.active, names.count))
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while true {
                lock.lock()
                let index = next
                next += 1
                let failed = failure != nil
                lock.unlock()
                guard index < names.count, !failed else { return }
                let entry = names[index]
                let result = Result { () throws -> Factored in
                    let candidate = try loadCandidate(entry.name, layout: entry.layout, base: base, finetuned: finetuned)
                    base.releasePages(entry.name)
                    finetuned.releasePages(entry.name)
                    // Seeded by position, so the result does not depend on which core ran it.
                    var moduleOptions = options
                    if let ranks { moduleOptions.rule = .fixed(ranks[index]) }
                    let position = seeds?[index] ?? index
                    var factored = try factor(candidate, options: moduleOptions, seed: options.seed &+ UInt64(position) &* 0x9E37_79B9_7F4A_7C15)
                    if case .budget = moduleOptions.rule {} else { factored.triplets = truncate(factored.triplets, to: factored.rank) }
                    // Only the triplets are kept: holding every delta would cost the model.
                    factored.candidate.delta = Matrix(zeros: 0, 0)
                    return factored
                }
                lock.lock()
                defer { lock.unlock() }
                switch result {
                case .failure(let error): failure = failure ?? error
                case .success(let factored): waiting[index] = factored
                }
                while failure == nil, let ready = waiting.removeValue(forKey: nextToEmit) {
                    do { try emit(nextToEmit, ready) } catch { failure = error }
                    nextToEmit += 1
                }
                finished += 1
                progress(finished)
            }
        }
        if let failure { throw failure }
    }
}
