"""Writing test input files line by line, raw bytes allowed (for invalid UTF-8 cases)."""


def write_lines(path, lines):
    with open(path, "wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else line.encode("utf-8"))
            handle.write(b"\n")
    return str(path)
