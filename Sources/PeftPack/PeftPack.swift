/// peftpack: a container, tools and a runtime for parameter-efficient fine-tuning artifacts.
public enum PeftPackVersion {
    public static let string = "0.1.0"
}
