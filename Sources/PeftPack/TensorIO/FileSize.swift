/// Sizes as transformers' `convert_file_size_to_int` reads them: a whole number of bytes ("4096"),
/// or a whole number with a unit, binary for KiB/MiB/GiB (powers of 1024) and decimal for
/// KB/MB/GB (powers of 1000), units in any case, except that a lowercase final "b" ("5Gb") means
/// bits and is divided by 8 as there.
public enum FileSize {
    public static func parse(_ text: String) -> Int? {
        let units: [(suffix: String, multiplier: Int, decimal: Bool)] = [
            ("GIB", 1 << 30, false), ("MIB", 1 << 20, false), ("KIB", 1 << 10, false),
            ("GB", 1_000_000_000, true), ("MB", 1_000_000, true), ("KB", 1_000, true),
        ]
        guard let unit = units.first(where: { text.uppercased().hasSuffix($0.suffix) }) else {
            return wholeNumber(text)
        }
        guard let number = wholeNumber(String(text.dropLast(unit.suffix.count))) else { return nil }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: unit.multiplier)
        guard !overflow else { return nil }
        return unit.decimal && text.hasSuffix("b") ? bytes / 8 : bytes
    }

    /// Digits only, with surrounding spaces allowed as Python's `int()` allows them.
    private static func wholeNumber(_ text: String) -> Int? {
        let digits = text.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(String(digits))
    }
}
