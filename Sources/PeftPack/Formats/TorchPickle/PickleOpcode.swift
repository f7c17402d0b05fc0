/// The pickle opcodes (CPython's Lib/pickle.py names) a torch.save state dict uses.
enum PickleOpcode {
    static let mark = UInt8(ascii: "(")
    static let stop = UInt8(ascii: ".")
    static let binInt = UInt8(ascii: "J")
    static let binInt1 = UInt8(ascii: "K")
    static let binInt2 = UInt8(ascii: "M")
    static let binUnicode = UInt8(ascii: "X")
    static let emptyDict = UInt8(ascii: "}")
    static let emptyTuple = UInt8(ascii: ")")
    static let setItem = UInt8(ascii: "s")
    static let setItems = UInt8(ascii: "u")
    static let tuple = UInt8(ascii: "t")
    static let global = UInt8(ascii: "c")
    static let reduce = UInt8(ascii: "R")
    static let binPersId = UInt8(ascii: "Q")
    static let binGet = UInt8(ascii: "h")
    static let longBinGet = UInt8(ascii: "j")
    static let binPut = UInt8(ascii: "q")
    static let longBinPut = UInt8(ascii: "r")
    static let tuple1: UInt8 = 0x85
    static let tuple2: UInt8 = 0x86
    static let tuple3: UInt8 = 0x87
    static let newFalse: UInt8 = 0x89
    static let long1: UInt8 = 0x8A
}
