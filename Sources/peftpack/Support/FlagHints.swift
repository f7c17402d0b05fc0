import PeftPack

/// The library states what is wrong; this is where a refusal that another request would resolve
/// gets the flags that make that request, in one table for every command. Hints that depend on
/// which flags a command was given stay with it (the base check's, import's --base).
enum FlagHints {
    /// The way out of `error`, as flags, or nil when no flag helps.
    static func hint(for error: Error) -> String? {
        switch error {
        case OutputError.exists:
            return "pass --force to replace it"
        case let error as InputError:
            return hint(for: error.kind)
        case is Extract.BudgetTooSmallError:
            return "raise --budget or pass --embeddings skip / --other skip"
        case is AmbiguousReferenceError:
            return "choose one with --key"
        default:
            return nil
        }
    }

    static func hint(for kind: InputError.Kind) -> String? {
        switch kind {
        case .malformed, .forbiddenContent, .unsupportedTensorType, .notExpressible: nil
        case .notLoadedByItsTool: "correct adapter_config.json, or pass --drop-unloaded to leave such tensors out as PEFT does"
        case .notMergeable: "pass --skip-unmergeable to leave it out"
        case .severalAdapters: "choose one with --name"
        case .noSuchAdapter: nil
        case .allWeightsZero: "give at least one adapter a non-zero --weight"
        case .oneNameForSeveral: "--name can only rename a single one"
        case .duplicateName: "give distinct names with --name"
        case .baseNotRecorded: "import it with --base"
        case .needsBaseModel: "pass --base"
        case .onlyAdapterHubExpresses: "export them with --format adapterhub"
        case .onlyPeftExpresses: "use --format peft"
        case .denseDelta: "merge it, or re-extract with --other full"
        case .predictionHead: "pass --without-head to import the adapter alone"
        }
    }

    /// `error`'s one line, with the flags that would resolve it.
    static func message(for error: UserFacingError) -> String {
        hint(for: error).map { "\(error.description); \($0)" } ?? error.description
    }
}

extension Extract.FullTensorReport {
    /// The reason as the CLI reports it (text and --json): a tensor that could be factored names the flag that does it.
    var withFlagHint: Self {
        var hinted = self
        if factorable { hinted.reason += " (use --embeddings lora to factor it)" }
        return hinted
    }
}
