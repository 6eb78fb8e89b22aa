"""Reading a next.config.* as text: its language and module system, the config object, and the keys that
decide whether a deploy works (``output``, ``outputFileTracingRoot``, ``cacheComponents``).

Never runs the file. A small scanner blanks comments and string contents (keeping offsets), so a key in a
comment or a string is never taken for a real one, and finds the object literal the file exports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

OutputKind = Literal["standalone", "export", "code"]


@dataclass(frozen=True)
class OutputSetting:
    """The config's ``output``: a literal, or code (an env var, a condition) whose value only the build knows."""

    kind: OutputKind
    expression: str  # as written, e.g. ``process.env.NEXT_OUTPUT``
    line: int  # 1-based
    env_vars: tuple[str, ...] = ()
    env_value: tuple[str, str] | None = None  # (name, value) that makes it "standalone", when it can be read off


@dataclass(frozen=True)
class NextConfig:
    path: Path | None
    text: str
    language: Literal["ts", "js"]
    esm: bool  # no __dirname, no require: import.meta.url instead
    object_span: tuple[int, int] | None  # offsets of the exported object literal's braces
    typed: bool  # TS: the object is checked against NextConfig (annotation, satisfies, as)
    output: OutputSetting | None
    sets_tracing_root: bool
    sets_deployment_id: bool
    cache_components: bool
    quote: str  # the quote character the file uses most
    page_extensions: tuple[str, ...] = ()  # a literal pageExtensions list; () when not set (Next's defaults)


def mask(text: str) -> str:
    """``text`` with comments and the contents of strings and template literals replaced by spaces
    (newlines kept, quotes kept), so offsets and line numbers stay the same."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out[i:end] = [c if c == "\n" else " " for c in text[i:end]]
            i = end
        elif char == "/" and _regex_may_start(text, i):
            i = _regex_end(text, i)
        elif char in "\"'`":
            j = i + 1
            while j < n and text[j] != char and not (char != "`" and text[j] == "\n"):
                j += 2 if text[j] == "\\" else 1
            out[i + 1:min(j, n)] = [c if c == "\n" else " " for c in text[i + 1:min(j, n)]]
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _regex_may_start(text: str, index: int) -> bool:
    """A ``/`` after an operator or an opening bracket starts a regex literal (elsewhere it divides)."""
    before = text[:index].rstrip()
    return not before or before[-1] in "(,=:[!&|?{};" or before.endswith("return")


def _regex_end(text: str, start: int) -> int:
    """Just past the regex literal starting at ``start`` (its quotes are no strings)."""
    index, in_class = start + 1, False
    while index < len(text) and text[index] != "\n":
        char = text[index]
        if char == "\\":
            index += 1
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "/" and not in_class:
            return index + 1
        index += 1
    return start + 1  # not a regex after all


def _matching_brace(masked: str, start: int) -> int | None:
    """The offset of the bracket closing the one at ``start``."""
    depth = 0
    for index in range(start, len(masked)):
        if masked[index] in "{[(":
            depth += 1
        elif masked[index] in "}])":
            depth -= 1
            if depth == 0:
                return index
    return None


_EXPORT = re.compile(r"\bexport\s+default\b|\bmodule\.exports\s*=")
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")


def _declaration(masked: str, name: str) -> tuple[int, bool] | None:
    """Where ``const name = {`` opens its object literal, and whether it has a type annotation."""
    found = re.search(rf"\b(?:const|let|var)\s+{re.escape(name)}\s*(:\s*[\w.$<>\[\], ]+?)?\s*=\s*\{{", masked)
    return (found.end() - 1, bool(found.group(1))) if found else None


def find_config_object(masked: str) -> tuple[int, int, bool] | None:
    """The exported config object literal: (open brace, close brace, annotated), or None when the file
    exports something else (a function, an import) or it cannot be told."""
    exports = list(_EXPORT.finditer(masked))
    if not exports:
        return None
    start = exports[-1].end()
    rest = masked[start:].lstrip()
    offset = len(masked) - len(rest)
    if rest.startswith("{"):
        close = _matching_brace(masked, offset)
        return (offset, close, False) if close is not None else None
    # An identifier, or calls wrapping one or an object literal: withMDX(withIntl(nextConfig)), defineConfig({...}).
    expression_end = _expression_end(masked, offset)
    expression = masked[offset:expression_end]
    literal = re.search(r"\(\s*\{", expression)
    if literal is not None:
        brace = offset + literal.end() - 1
        close = _matching_brace(masked, brace)
        return (brace, close, False) if close is not None else None
    for name in _IDENT.findall(expression):
        declared = _declaration(masked, name)
        if declared is not None:
            close = _matching_brace(masked, declared[0])
            if close is not None:
                return declared[0], close, declared[1]
    return None


def _expression_end(masked: str, start: int, in_object: bool = False) -> int:
    """Where the expression starting at ``start`` ends, at depth 0: a ``;``, a closing bracket, a ``,`` in an
    object (``in_object``), else a newline unless the next line goes on with an operator. A value may span
    lines."""
    depth = 0
    for index in range(start, len(masked)):
        char = masked[index]
        if char in "{[(":
            depth += 1
        elif char in "}])":
            if depth == 0:
                return index
            depth -= 1
        elif depth == 0 and _ends_here(masked, start, index, in_object):
            return index
    return len(masked)


def _ends_here(masked: str, start: int, index: int, in_object: bool) -> bool:
    """At depth 0: a ``;``, a ``,`` between properties, or (outside an object) a newline after something,
    unless the next line goes on with an operator."""
    char = masked[index]
    if char == ";" or (char == "," and in_object):
        return True
    return (char == "\n" and not in_object and bool(masked[start:index].strip())
            and not re.match(r"\s*[.(?:|&+]", masked[index:]))


def _top_level_key(masked: str, span: tuple[int, int], key: str) -> re.Match[str] | None:
    """``key:`` directly inside the object (not in a nested one)."""
    depth = 0
    pattern = re.compile(rf"\b{key}\s*:")
    index = span[0] + 1
    while index < span[1]:
        char = masked[index]
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        elif depth == 0 and (index == 0 or not (masked[index - 1].isalnum() or masked[index - 1] in "_$")):
            found = pattern.match(masked, index)
            if found is not None:
                return found
        index += 1
    return None


_ENV = re.compile(r"""process\.env(?:\.([A-Za-z_]\w*)|\[\s*["']([A-Za-z_]\w*)["']\s*\])""")


def _output_setting(text: str, masked: str, span: tuple[int, int] | None) -> OutputSetting | None:
    key = _top_level_key(masked, span, "output") if span else None
    if key is None:
        key = re.search(r"(?<![\w$.])output\s*:", masked)
    if key is None and re.search(r"[{,]\s*output\s*[,}]", masked):
        # The shorthand ``{ output, ... }``: the value is the variable's (``const output = process.env...``).
        key = re.search(r"\b(?:const|let|var)\s+output\s*=(?!=)", masked)
    assigned = re.search(r"\.output\s*=(?!=)", masked)
    if key is None and assigned is None:
        return None
    match = key if key is not None else assigned
    assert match is not None
    value_start = match.end()
    in_object = match.group().rstrip().endswith(":")
    value_end = _expression_end(masked, value_start, in_object=in_object)
    expression = text[value_start:value_end].strip()
    line = text.count("\n", 0, match.start()) + 1
    literal = re.fullmatch(r"""(["'`])(\w+)\1(?:\s+as\s+const)?""", expression)
    # An assignment (``if (...) config.output = "standalone"``) depends on the code around it.
    context = expression if key is not None else _line_around(text, match.start())
    if literal is not None and key is not None:
        value = literal.group(2)
        if value in ("standalone", "export"):
            return OutputSetting(value, expression, line)  # type: ignore[arg-type]
    env_vars = tuple(dict.fromkeys(a or b for a, b in _ENV.findall(context)))
    return OutputSetting("code", expression, line, env_vars, _standalone_env_value(context))


def _line_around(text: str, offset: int) -> str:
    """The line holding ``offset`` and the one before it (an ``if (...)`` above an assignment)."""
    begin = text.rfind("\n", 0, text.rfind("\n", 0, offset)) + 1
    end = text.find("\n", offset)
    return text[begin:end if end >= 0 else len(text)]


def _standalone_env_value(expression: str) -> tuple[str, str] | None:
    """The env var and value that make ``expression`` give "standalone", for the usual shapes:
    ``process.env.X``, ``process.env.X === "v" ? "standalone" : ...``, ``process.env.X ? "standalone" : ...``."""
    env = _ENV.pattern
    gives = r"""\s*\)?\s*\{?\s*(?:(?:\?|&&)[\s(]*|(?=[\w$]+\.output\b))(?:[\w$]+\.output\s*=\s*)?["']standalone["']"""
    plain = re.fullmatch(rf"\s*{env}(?:\s+as\s+[\w\s|\"'.]+)?\s*", expression)
    if plain:
        return plain.group(1) or plain.group(2), "standalone"
    compared = re.search(rf"""{env}\s*===?\s*(["'])([^"']*)\3{gives}""", expression)
    if compared:
        return compared.group(1) or compared.group(2), compared.group(4)
    truthy = re.search(rf"{env}{gives}", expression)
    if truthy:
        return truthy.group(1) or truthy.group(2), "1"
    return None


def major_version(version: str | None) -> int | None:
    """16 from ``16.4.6``, ``^16.0.10`` or ``~16.1``; None for ``latest``, ``canary`` or nothing."""
    found = re.search(r"\d+", version or "")
    return int(found.group()) if found else None


def read_next_config(path: Path | None, package_type: str | None, next_major: int | None) -> NextConfig:
    """Analyse the app's next.config.* (``path`` None: the app has none)."""
    text = path.read_text(encoding="utf-8", errors="replace") if path else ""
    masked = mask(text)
    suffix = path.suffix if path else ".mjs"
    language: Literal["ts", "js"] = "ts" if suffix in (".ts", ".mts") else "js"
    if suffix in (".mjs", ".mts"):
        esm = True
    elif suffix == ".cjs":
        esm = False
    elif suffix == ".ts":
        # Early Next 15 compiled next.config.ts to CommonJS, where import.meta fails (vercel/next.js#71705);
        # __dirname works in every 15.x, and Next 16 runs both forms.
        esm = next_major is None or next_major >= 16
    else:  # .js: the package's module type, or ESM syntax that Node detects
        esm = package_type == "module" or bool(re.search(r"^\s*(?:import\s|export\s+default\b)", masked, re.M))
    found = find_config_object(masked)
    span = (found[0], found[1]) if found else None
    typed = bool(found and found[2])
    if found is not None:
        after = masked[found[1] + 1:found[1] + 40]
        typed = typed or bool(re.match(r"\s*(?:satisfies|as)\s+\w", after))
    singles, doubles = len(re.findall(r"'", masked)), len(re.findall(r'"', masked))
    return NextConfig(
        path=path,
        text=text,
        language=language,
        esm=esm,
        object_span=span,
        typed=typed,
        output=_output_setting(text, masked, span),
        sets_tracing_root=bool(re.search(r"\boutputFileTracingRoot\s*[:=]", masked)),
        sets_deployment_id=bool(re.search(r"\bdeploymentId\s*:", masked)),
        cache_components=bool(re.search(r"\b(?:cacheComponents|dynamicIO)\s*:\s*true\b", masked)),
        quote="'" if singles > doubles else '"',
        page_extensions=_page_extensions(text, masked),
    )


def _page_extensions(text: str, masked: str) -> tuple[str, ...]:
    found = re.search(r"\bpageExtensions\s*:\s*\[", masked)
    close = _matching_brace(masked, found.end() - 1) if found else None
    if found is None or close is None:
        return ()
    return tuple(re.findall(r"""["'`]([\w.]+)["'`]""", text[found.end():close]))
