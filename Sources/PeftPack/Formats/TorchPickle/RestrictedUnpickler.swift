/// Values the restricted unpickler can build. Anything a torch.save of a state dict does not
/// need is not representable.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case integer(Int64)
    case float(Double)
    case string(String)
    case bytes(Int)
    case tuple([PickleValue], depth: Int)
    case list(PickleList)
    case dict(PickleDict)
    case global(String)
    case storage(TorchStorage)
    case tensor(TorchTensorView)
    case mark

    /// Levels of containers in this value (0 for a scalar); kept with each container so it is
    /// never recomputed by walking (memo references can make a small pickle a huge tree).
    var depth: Int {
        switch self {
        case .tuple(_, let depth): depth
        case .list(let list): list.depth
        case .dict(let dict): dict.depth
        default: 0
        }
    }
}

/// Lists and dicts are filled after they are made (APPEND, SETITEMS). Once one is inside another
/// value it is sealed: further changes could make cycles or deepen values already counted, and
/// torch.save never writes them.
final class PickleList {
    var items: [PickleValue] = []
    var depth = 1
    var sealed = false
}

final class PickleDict {
    var entries: [(key: PickleValue, value: PickleValue)] = []
    var depth = 1
    var sealed = false
}

/// A tensor as the pickle describes it: a contiguous range of one storage. Its bytes are copied
/// only when the state dict is assembled, after the total has been checked.
struct TorchTensorView {
    var storage: TorchStorage
    var byteOffset: Int
    var shape: [Int]

    var byteCount: Int { (Shape.elementCount(shape) ?? 0) * storage.dtype.byteSize }

    func materialize() -> HostTensor {
        HostTensor(dtype: storage.dtype, shape: shape,
                   bytes: [UInt8](UnsafeRawBufferPointer(rebasing: storage.data[byteOffset..<(byteOffset + byteCount)])))
    }
}

struct TorchStorage {
    var dtype: DType
    var data: UnsafeRawBufferPointer
}

/// A pickle virtual machine that knows only the opcodes torch.save emits and only the globals that
/// rebuild tensors. It never imports or calls anything: globals are names, and REDUCE is allowed
/// only on the rebuild helpers, which it implements itself.
struct RestrictedUnpickler {
    static let storageTypes: [String: DType] = [
        "torch.FloatStorage": .f32, "torch.HalfStorage": .f16, "torch.BFloat16Storage": .bf16,
        "torch.DoubleStorage": .f64, "torch.LongStorage": .i64, "torch.IntStorage": .i32,
        "torch.ShortStorage": .i16, "torch.CharStorage": .i8, "torch.ByteStorage": .u8, "torch.BoolStorage": .bool,
    ]
    static let callables: Set<String> = [
        "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor", "torch._utils._rebuild_parameter",
        "collections.OrderedDict",
    ]
    static let maximumStack = 1 << 20
    static let maximumMemo = 1 << 20
    /// A state dict nests four levels at most (dict → rebuild arguments → size tuple, or the
    /// `_metadata` dicts); deeper values are refused before their teardown could recurse deeply.
    static let maximumDepth = 32

    let file: String
    let code: UnsafeRawBufferPointer
    let loadStorage: (_ key: String, _ dtype: DType, _ count: Int) throws -> TorchStorage
    var position = 0
    var stack: [PickleValue] = []
    var memo: [Int: PickleValue] = [:]

    func fail(_ problem: String) -> InputError { InputError(file: file, problem: "pickle: \(problem)") }

    mutating func read(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= code.count - position else { throw fail("truncated at byte \(position)") }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: code[position..<(position + count)])
    }

    mutating func byte() throws -> UInt8 { try read(1)[0] }

    mutating func unsigned(_ width: Int) throws -> Int {
        let raw = try read(width)
        var value: UInt64 = 0
        for index in (0..<width).reversed() { value = value << 8 | UInt64(raw[index]) }
        guard value <= UInt64(Int.max) else { throw fail("length out of range") }
        return Int(value)
    }

    mutating func line() throws -> String {
        guard let end = code[position...].firstIndex(of: 0x0A) else { throw fail("unterminated GLOBAL") }
        defer { position = end + 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: code[position..<end]), as: UTF8.self)
    }

    mutating func push(_ value: PickleValue) throws {
        guard stack.count < Self.maximumStack else { throw fail("stack deeper than \(Self.maximumStack)") }
        stack.append(value)
    }

    mutating func pop() throws -> PickleValue {
        guard let value = stack.popLast() else { throw fail("stack underflow at byte \(position)") }
        return value
    }

    mutating func popToMark() throws -> [PickleValue] {
        guard let mark = stack.lastIndex(where: { if case .mark = $0 { return true }; return false }) else {
            throw fail("no MARK on the stack")
        }
        let items = Array(stack[(mark + 1)...])
        stack.removeSubrange(mark...)
        return items
    }

    /// Puts `items` inside a new or growing container of current depth `depth`: seals them and
    /// returns the container's new depth.
    func nest(_ items: [PickleValue], into depth: Int, container: AnyObject? = nil) throws -> Int {
        var result = depth
        for item in items {
            switch item {
            case .list(let list):
                guard list !== container else { throw fail("a list is put inside itself") }
                list.sealed = true
            case .dict(let dict):
                guard dict !== container else { throw fail("a dict is put inside itself") }
                dict.sealed = true
            default: break
            }
            result = max(result, item.depth + 1)
        }
        guard result <= Self.maximumDepth else { throw fail("values nested deeper than \(Self.maximumDepth) levels") }
        return result
    }

    func tuple(_ items: [PickleValue]) throws -> PickleValue {
        .tuple(items, depth: try nest(items, into: 1))
    }

    func append(_ items: [PickleValue], to list: PickleList) throws {
        guard !list.sealed else { throw fail("a list is changed after being put inside another value") }
        list.depth = try nest(items, into: list.depth, container: list)
        list.items += items
    }

    func setItems(_ items: [PickleValue], in dict: PickleDict) throws {
        guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of values") }
        guard !dict.sealed else { throw fail("a dict is changed after being put inside another value") }
        dict.depth = try nest(items, into: dict.depth, container: dict)
        for index in stride(from: 0, to: items.count, by: 2) { dict.entries.append((items[index], items[index + 1])) }
    }

    mutating func memoize(_ index: Int) throws {
        guard memo.count < Self.maximumMemo else { throw fail("memo larger than \(Self.maximumMemo)") }
        guard let top = stack.last else { throw fail("memo of an empty stack") }
        memo[index] = top
    }

    mutating func global(_ name: String) throws -> PickleValue {
        guard Self.callables.contains(name) || Self.storageTypes[name] != nil else {
            throw InputError.forbiddenGlobal(file: file, name: name)
        }
        return .global(name)
    }

    mutating func run() throws -> PickleValue {
        while true {
            let opcode = try byte()
            switch opcode {
            case 0x80: _ = try byte()
            case 0x95: _ = try read(8)
            case UInt8(ascii: "}"): try push(.dict(PickleDict()))
            case UInt8(ascii: "]"): try push(.list(PickleList()))
            case UInt8(ascii: ")"): try push(.tuple([], depth: 1))
            case UInt8(ascii: "("): try push(.mark)
            case UInt8(ascii: "X"): try push(.string(String(decoding: try read(try unsigned(4)), as: UTF8.self)))
            case 0x8C: try push(.string(String(decoding: try read(Int(try byte())), as: UTF8.self)))
            case 0x8D: try push(.string(String(decoding: try read(try unsigned(8)), as: UTF8.self)))
            case UInt8(ascii: "C"): try push(.bytes(try read(Int(try byte())).count))
            case UInt8(ascii: "B"): try push(.bytes(try read(try unsigned(4)).count))
            case UInt8(ascii: "J"): try push(.integer(Int64(Int32(truncatingIfNeeded: try unsigned(4)))))
            case UInt8(ascii: "K"): try push(.integer(Int64(try byte())))
            case UInt8(ascii: "M"): try push(.integer(Int64(try unsigned(2))))
            case 0x8A:
                let length = Int(try byte())
                guard length <= 8 else { throw fail("integer wider than 64 bits") }
                let raw = try read(length)
                var value: Int64 = 0
                for index in (0..<length).reversed() { value = value << 8 | Int64(raw[index]) }
                if length > 0 && length < 8 && raw[length - 1] & 0x80 != 0 { value -= Int64(1) << (8 * length) }
                try push(.integer(value))
            case UInt8(ascii: "G"):
                let raw = try read(8)
                var bits: UInt64 = 0
                for index in 0..<8 { bits = bits << 8 | UInt64(raw[index]) }
                try push(.float(Double(bitPattern: bits)))
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case UInt8(ascii: "N"): try push(.none)
            case 0x85: try push(try tuple([try pop()]))
            case 0x86: let b = try pop(), a = try pop(); try push(try tuple([a, b]))
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); try push(try tuple([a, b, c]))
            case UInt8(ascii: "t"): try push(try tuple(try popToMark()))
            case UInt8(ascii: "s"):
                let value = try pop(), key = try pop()
                guard case .dict(let dict)? = stack.last else { throw fail("SETITEM on a non-dict") }
                try setItems([key, value], in: dict)
            case UInt8(ascii: "u"):
                let items = try popToMark()
                guard case .dict(let dict)? = stack.last else { throw fail("SETITEMS on a non-dict") }
                try setItems(items, in: dict)
            case UInt8(ascii: "a"):
                let value = try pop()
                guard case .list(let list)? = stack.last else { throw fail("APPEND on a non-list") }
                try append([value], to: list)
            case UInt8(ascii: "e"):
                let items = try popToMark()
                guard case .list(let list)? = stack.last else { throw fail("APPENDS on a non-list") }
                try append(items, to: list)
            case UInt8(ascii: "q"): try memoize(Int(try byte()))
            case UInt8(ascii: "r"): try memoize(try unsigned(4))
            case 0x94: try memoize(memo.count)
            case UInt8(ascii: "h"), UInt8(ascii: "j"):
                let index = opcode == UInt8(ascii: "h") ? Int(try byte()) : try unsigned(4)
                guard let value = memo[index] else { throw fail("memo entry \(index) is missing") }
                try push(value)
            case UInt8(ascii: "c"):
                let module = try line(), name = try line()
                try push(try global("\(module).\(name)"))
            case 0x93:
                let name = try pop(), module = try pop()
                guard case .string(let n) = name, case .string(let m) = module else { throw fail("STACK_GLOBAL needs two strings") }
                try push(try global("\(m).\(n)"))
            case UInt8(ascii: "Q"):
                try push(try persistentLoad(try pop()))
            case UInt8(ascii: "R"):
                let arguments = try pop(), callable = try pop()
                guard case .global(let name) = callable, case .tuple(let args, _) = arguments else { throw fail("REDUCE on something that is not an allowed global") }
                try push(try call(name, args))
            case UInt8(ascii: "b"):
                _ = try pop()
                guard stack.last != nil else { throw fail("BUILD on an empty stack") }
            case UInt8(ascii: "."):
                return try pop()
            default:
                throw fail("unsupported opcode 0x\(String(opcode, radix: 16)) at byte \(position - 1)")
            }
        }
    }

    mutating func persistentLoad(_ id: PickleValue) throws -> PickleValue {
        guard case .tuple(let parts, _) = id, parts.count == 5, case .string("storage") = parts[0],
              case .global(let typeName) = parts[1], let dtype = Self.storageTypes[typeName],
              case .string(let key) = parts[2], case .integer(let count) = parts[4], count >= 0 else {
            throw fail("persistent id is not a torch storage reference")
        }
        return .storage(try loadStorage(key, dtype, Int(count)))
    }

    func call(_ name: String, _ args: [PickleValue]) throws -> PickleValue {
        switch name {
        case "collections.OrderedDict":
            return .dict(PickleDict())
        case "torch._utils._rebuild_parameter":
            guard let first = args.first, case .tensor = first else { throw fail("_rebuild_parameter without a tensor") }
            return first
        case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
            guard args.count >= 4, case .storage(let storage) = args[0], case .integer(let offset) = args[1],
                  case .tuple(let sizeItems, _) = args[2], case .tuple(let strideItems, _) = args[3] else {
                throw fail("\(name) has unexpected arguments")
            }
            let size = try sizeItems.map { item -> Int in
                guard case .integer(let value) = item, value >= 0 else { throw fail("tensor size is not a non-negative integer") }
                return Int(value)
            }
            let strides = try strideItems.map { item -> Int in
                guard case .integer(let value) = item else { throw fail("tensor stride is not an integer") }
                return Int(value)
            }
            guard strides.count == size.count, let count = Shape.elementCount(size) else { throw fail("tensor shape and strides disagree") }
            var expected = 1
            for dim in (0..<size.count).reversed() {
                guard size[dim] == 1 || strides[dim] == expected else { throw fail("non-contiguous tensors are not supported") }
                expected *= size[dim]
            }
            let elementSize = storage.dtype.byteSize
            let available = storage.data.count / elementSize
            guard offset >= 0, Int(offset) <= available, count <= available - Int(offset) else {
                throw fail("tensor of \(count) elements at offset \(offset) runs past its storage of \(available)")
            }
            return .tensor(TorchTensorView(storage: storage, byteOffset: Int(offset) * elementSize, shape: size))
        default:
            throw InputError.forbiddenGlobal(file: file, name: name)
        }
    }
}
