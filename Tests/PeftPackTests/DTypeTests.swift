import Testing
@testable import PeftPack

@Suite struct DTypeTests {
    @Test func byteSizesMatchSafetensors() {
        #expect(DType.bf16.byteSize == 2)
        #expect(DType.f32.byteSize == 4)
        #expect(DType.bool.byteSize == 1)
    }

    @Test func userNamesParse() {
        #expect(DType(userName: "fp16") == .f16)
        #expect(DType(userName: "bf16") == .bf16)
        #expect(DType(userName: "nonsense") == nil)
    }

    @Test func overflowingShapeHasNoElementCount() {
        #expect(Shape.elementCount([Int.max, 2]) == nil)
        #expect(Shape.elementCount([-1]) == nil)
        #expect(Shape.elementCount([]) == 1)
    }
}
