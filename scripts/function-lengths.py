#!/usr/bin/env python3
"""Lists the Swift functions and initializers longer than a limit (default 60 lines).

A body's length is the number of lines from the line of its opening brace to the line of the
matching closing brace, both included; a function nested in another is listed on its own and also
counts inside its parent. Braces inside string literals (including multi-line and raw strings) and
comments are not counted. Closures are not functions: they count inside the function holding them.

    python3 scripts/function-lengths.py [--limit N] [PATH ...]   (default: Sources/PeftPack/Operations)

Exit status 1 when any function is over the limit, so CI can run it.
"""
import argparse
import os
import re
import sys

# A function without a body (a protocol requirement, an imported C function) ends where the next
# declaration starts.
NEXT_DECLARATION = re.compile(r"(?<![\w.])(#\w+|@\w+|func|var|let|init|case|enum|struct|class|extension|protocol|public|private|fileprivate|internal|static)\b")
DECLARATION = re.compile(r"\b(func\s+([^\s(<]+)|init[?!]?\s*[(<]|deinit\b|subscript\s*[(<])")


def code_only(text):
    """The text with string literals and comments blanked (newlines kept), so braces are code."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"' or (c == "#" and re.match(r'#+"', text[i:])):
            j = skip_string(text, i)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def skip_string(text, i):
    """Index just past the string literal starting at i (raw, multi-line, interpolated)."""
    hashes = 0
    while text[i] == "#":
        hashes, i = hashes + 1, i + 1
    multiline = text.startswith('"""', i)
    quote = '"""' if multiline else '"'
    close = quote + "#" * hashes
    j = i + len(quote)
    n = len(text)
    while j < n:
        if text.startswith(close, j):
            return j + len(close)
        if text[j] == "\\" and text.startswith("(", j + 1 + hashes) and text[j + 1:j + 1 + hashes] == "#" * hashes:
            # Interpolation: skip to the matching parenthesis, strings inside included.
            j += 1 + hashes
            depth = 0
            while j < n:
                if text[j] == '"':
                    j = skip_string(text, j)
                    continue
                if text[j] == "(":
                    depth += 1
                elif text[j] == ")":
                    depth -= 1
                    if depth == 0:
                        j += 1
                        break
                j += 1
            continue
        if text[j] == "\\" and hashes == 0:
            j += 2
            continue
        j += 1
    return n


def functions(path):
    """(name, first line, length in lines) of every function body in one file."""
    with open(path, encoding="utf-8") as handle:
        code = code_only(handle.read())
    line_of = [0] * (len(code) + 1)
    line = 1
    for index, char in enumerate(code):
        line_of[index] = line
        if char == "\n":
            line += 1
    line_of[len(code)] = line
    found = []
    for match in DECLARATION.finditer(code):
        name = match.group(2) or match.group(1).rstrip("(<").strip()
        # The body starts at the first "{" after the signature, at parenthesis depth 0; a
        # protocol requirement has none before the next declaration or closing brace.
        depth, j = 0, match.end()
        if match.group(1).endswith(("(", "<")):
            j -= 1
        body = None
        while j < len(code):
            c = code[j]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif depth == 0 and c == "{":
                body = j
                break
            elif depth == 0 and (c == "}" or NEXT_DECLARATION.match(code, j) and j > match.end()):
                break
            j += 1
        if body is None:
            continue
        level, k = 0, body
        while k < len(code):
            if code[k] == "{":
                level += 1
            elif code[k] == "}":
                level -= 1
                if level == 0:
                    break
            k += 1
        found.append((name, line_of[body], line_of[k] - line_of[body] + 1))
    return found


def swift_files(paths):
    for path in paths:
        if os.path.isfile(path):
            yield path
            continue
        for folder, _, names in sorted(os.walk(path)):
            for name in sorted(names):
                if name.endswith(".swift"):
                    yield os.path.join(folder, name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["Sources/PeftPack/Operations"])
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args()
    long = []
    for path in swift_files(args.paths):
        long += [(length, path, line, name) for name, line, length in functions(path) if length > args.limit]
    for length, path, line, name in sorted(long, reverse=True):
        print(f"{length:5d}  {path}:{line}  {name}")
    print(f"{len(long)} function(s) longer than {args.limit} lines")
    return 1 if long else 0


if __name__ == "__main__":
    sys.exit(main())
