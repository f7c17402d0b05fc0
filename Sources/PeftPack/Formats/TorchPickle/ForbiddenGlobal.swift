extension InputError {
    /// A torch.save pickle asking for anything beyond rebuilding tensors: nothing in such a file
    /// is ever executed.
    static func forbiddenGlobal(file: String, name: String) -> InputError {
        InputError(file: file, problem: "pickle references forbidden global \(name); only torch tensor rebuild helpers are allowed (the file was not loaded)", kind: .forbiddenContent)
    }
}
