// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "peftpack",
    products: [
        .library(name: "PeftPack", targets: ["PeftPack"]),
        .executable(name: "peftpack", targets: ["peftpack"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // C libraries, each behind a system-library module found with pkg-config.
        .systemLibrary(
            name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(
            name: "CXXHash", path: "Sources/CXXHash", pkgConfig: "libxxhash",
            providers: [.apt(["libxxhash-dev"])]),
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        // Vectorized dtype conversion kernels (F16C/AVX2 on x86-64, with a portable fallback that
        // -Xcc -DPEFTPACK_PORTABLE_KERNELS selects everywhere: scripts/portable-kernels.sh).
        .target(
            name: "CDTypeKernels", path: "Sources/CDTypeKernels",
            cSettings: [.unsafeFlags(["-O3"])]),
        .target(
            name: "PeftPack",
            dependencies: ["CZstd", "CXXHash", "COpenBLAS", "CDTypeKernels"],
            path: "Sources/PeftPack",
            // Data-parallel kernels share raw buffers across DispatchQueue.concurrentPerform
            // iterations over disjoint ranges, which Swift 6's checker cannot see is safe.
            swiftSettings: [.swiftLanguageMode(.v5)]),
        .executableTarget(
            name: "peftpack",
            dependencies: [
                "PeftPack",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/peftpack"),
        // Measurements for Benchmarks/*.sh; not part of the product.
        .executableTarget(
            name: "peftpack-bench",
            dependencies: ["PeftPack"],
            path: "Benchmarks/Sources/peftpack-bench"),
        // libFuzzer targets over the parsers of untrusted input (Fuzz/run.sh); a normal build is
        // a replayer of inputs through them.
        .executableTarget(
            name: "peftpack-fuzz",
            dependencies: ["PeftPack"],
            path: "Fuzz/Sources/peftpack-fuzz",
            swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(
            name: "PeftPackTests",
            dependencies: ["PeftPack"],
            path: "Tests/PeftPackTests",
            exclude: ["Malformed"]),
    ]
)
