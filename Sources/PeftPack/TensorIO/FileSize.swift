import Foundation

/// Sizes as users and transformers write them ("500MB", "2GB", "1GiB", "4096"): decimal units are
/// powers of 1000 and binary units powers of 1024, as transformers' `convert_file_size_to_int`.
public enum FileSize {
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Int)] = [
            ("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10),
            ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000), ("B", 1),
        ]
        for (suffix, multiplier) in units where trimmed.hasSuffix(suffix) {
            guard let number = Double(trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)),
                  number >= 0, number * Double(multiplier) < Double(Int.max) else { return nil }
            return Int(number * Double(multiplier))
        }
        return Int(trimmed).flatMap { $0 >= 0 ? $0 : nil }
    }
}
