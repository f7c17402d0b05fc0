import ArgumentParser

/// `peftpack help TOPIC…` for a TOPIC that is no command: ArgumentParser prints the overview and
/// exits 0, which scripts take for success; peftpack treats it as the usage error it is.
enum HelpRequest {
    /// The message for an unknown topic, or nil when the arguments are no help request or name
    /// a command.
    static func unknownTopicMessage(_ arguments: [String], root: ParsableCommand.Type) -> String? {
        guard arguments.first == "help" else { return nil }
        var level: [ParsableCommand.Type] = root.configuration.subcommands
        for topic in arguments.dropFirst() where !topic.hasPrefix("-") {
            var names: [String] = []
            var match: ParsableCommand.Type?
            for command in level {
                let name = command.configuration.commandName ?? command._commandName
                names.append(name)
                if name == topic { match = command }
            }
            guard let match else {
                return names.isEmpty ? "help: \(topic) is not a command (the command before it has no subcommands)"
                    : "help: no command named \(topic) (commands: \(names.joined(separator: ", ")))"
            }
            level = match.configuration.subcommands
        }
        return nil
    }
}
