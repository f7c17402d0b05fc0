import Foundation

/// Work items computed on every core and handed on in their own order.
enum OrderedParallel {
    /// Runs `work(0..<count)` on up to `workers` threads and calls `emit` with each result in index
    /// order, as soon as its predecessors have been emitted, so the output does not depend on
    /// which core finished first. A worker takes item i only once item i − `workers` has been
    /// emitted: results waiting for a slow predecessor stay bounded (memory is about `workers`
    /// items, not all of them). `emit` runs on the worker threads, one call at a time.
    /// Errors behave as in a sequential loop: after a failure no new item starts, the items before
    /// it are still emitted, and the error of the earliest failed item (work or emit) is thrown.
    static func forEach<Result>(count: Int, workers: Int, work: (Int) throws -> Result, emit: (Int, Result) throws -> Void) throws {
        let threads = max(1, min(workers, count))
        let condition = NSCondition()
        var next = 0, nextToEmit = 0
        var waiting: [Int: Result] = [:]
        var failures: [Int: Error] = [:]
        var firstFailure = Int.max
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            while true {
                condition.lock()
                while firstFailure == .max && next < count && next >= nextToEmit + threads { condition.wait() }
                let index = next
                next += 1
                let stop = firstFailure != .max || index >= count
                condition.unlock()
                if stop { return }
                let result = Swift.Result { try work(index) }
                condition.lock()
                defer {
                    condition.broadcast()
                    condition.unlock()
                }
                switch result {
                case .failure(let error):
                    failures[index] = error
                    firstFailure = min(firstFailure, index)
                case .success(let value): waiting[index] = value
                }
                while nextToEmit < firstFailure, let ready = waiting.removeValue(forKey: nextToEmit) {
                    do {
                        try emit(nextToEmit, ready)
                    } catch {
                        failures[nextToEmit] = error
                        firstFailure = min(firstFailure, nextToEmit)
                    }
                    nextToEmit += 1
                }
            }
        }
        if let failure = failures[firstFailure] { throw failure }
    }
}
