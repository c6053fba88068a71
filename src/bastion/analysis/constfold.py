"""Constant folding of interpreter code: names and paths spelled so no literal shows them.

A reader folds ``'ex' + 'ec'``, ``'yp.x//:ptth'[::-1]``, ``b'Zm9v'.decode()``,
``base64.b64decode('...')``, Tcl's ``[string reverse swa.]`` or perl's
``"env" . "iron"``, ``join("", ...)``, ``scalar reverse "..."``, ``sprintf`` in their head; the
capability scanners (``interp.code_features``, the file-act and credential scanners)
read literals. This module folds those spellings into the literal they stand for, one
shared step for every caller (``interp.fold_strings``, ``interp.fold_path_constants``),
and says when code reaches a code runner through a computed name
(``getattr(builtins, 'ex' + 'ec')``): that is dynamic code execution however it is
spelled. Nothing is executed: only a closed set of pure string operations on
constants is evaluated, with bounded sizes.
"""

from __future__ import annotations

import ast
import base64
import binascii
import codecs
import functools
import posixpath
import re
from typing import Any

__all__ = ["fold_perl", "fold_python", "fold_tcl", "python_dynamic_exec", "tcl_computed_name"]

_MAX_CODE = 65536
_MAX_VALUE = 4096
# builtins that run code or import modules: reached through a computed name, they are
# dynamic code execution
_CODE_RUNNERS = frozenset({"exec", "eval", "compile", "__import__", "execfile", "import_module"})
# process runners of os/subprocess/pty: folded into attribute form so the scanners see them
_PROC_RUNNERS = re.compile(r"^(?:system|popen\d?|exec\w*|spawn\w*|fork\w*|run|Popen|call|check_output|"
                           r"check_call|getoutput|getstatusoutput)$")
_BUILTIN_MODULES = frozenset({"builtins", "__builtin__"})
_RUNNER_MODULES = frozenset({"os", "subprocess", "pty", "posix", "importlib"})
# something to fold or resolve: a literal joined, sliced, decoded or looked up by name
_GATE = re.compile(r"['\"]\s*[+%]|[+%]\s*[\w.]*\(?['\"]|\[\s*:\s*:|\.join\(|\.decode\(|fromhex|\bchr\(|"
                   r"b(?:64|32|16|85)decode|codecs\.decode|unhexlify|\bgetattr\(|\bvars\(|__dict__\s*\[|"
                   r"import_module|__import__|reversed\(|\.format\(")


def _decode_b64(data: Any, fn: str) -> bytes | None:
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray)):
        return None
    try:
        if fn in ("b64decode", "decodebytes", "a2b_base64", "standard_b64decode"):
            return base64.b64decode(data)
        if fn == "urlsafe_b64decode":
            return base64.urlsafe_b64decode(data)
        if fn == "b32decode":
            return base64.b32decode(data)
        if fn in ("b16decode",):
            return base64.b16decode(data, casefold=True)
        if fn == "a85decode":
            return base64.a85decode(data)
        if fn == "b85decode":
            return base64.b85decode(data)
        if fn in ("unhexlify", "a2b_hex"):
            return binascii.unhexlify(data)
    except (binascii.Error, ValueError):
        return None
    return None


class _Consts:
    """Evaluates the closed set of constant string expressions (see module doc)."""

    def __init__(self, names: dict[str, Any], modules: dict[str, str]) -> None:
        self.names = names
        self.modules = modules
        # id(node) -> (node, value): each node evaluated once (the node is kept so that
        # its id is not reused while the cache lives)
        self._memo: dict[int, tuple[ast.AST, Any]] = {}

    def value(self, node: ast.AST, depth: int = 0) -> Any:
        if depth > 40:
            return None
        hit = self._memo.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        v = self._value(node, depth)
        if isinstance(v, (str, bytes)) and len(v) > _MAX_VALUE:
            return None
        if isinstance(v, list) and len(v) > _MAX_VALUE:
            v = None
        self._memo[id(node)] = (node, v)
        return v

    def _value(self, node: ast.AST, depth: int) -> Any:
        val = self.value
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes, int)) \
                and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = val(node.operand, depth + 1)
            return -operand if isinstance(operand, int) else None
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [val(e, depth + 1) for e in node.elts]
            return items if all(i is not None for i in items) else None
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str):
                    parts.append(v.value)
                elif isinstance(v, ast.FormattedValue) and v.format_spec is None and v.conversion == -1:
                    inner = val(v.value, depth + 1)
                    if not isinstance(inner, (str, int)):
                        return None
                    parts.append(str(inner))
                else:
                    return None
            return "".join(parts)
        if isinstance(node, ast.BinOp):
            a, b = val(node.left, depth + 1), val(node.right, depth + 1)
            if a is None or b is None:
                return None
            if isinstance(node.op, ast.Add) and type(a) is type(b) and not isinstance(a, int):
                return a + b
            if isinstance(node.op, ast.Add) and isinstance(a, list) and isinstance(b, list):
                return a + b
            if isinstance(node.op, ast.Mod) and isinstance(a, str) and isinstance(b, (str, int, list)):
                try:
                    return a % (tuple(b) if isinstance(b, list) else b)
                except (TypeError, ValueError):
                    return None
            return None
        if isinstance(node, ast.Subscript):
            base = val(node.value, depth + 1)
            if not isinstance(base, (str, bytes, list)):
                return None
            sl = node.slice
            if isinstance(sl, ast.Slice):
                parts = [val(p, depth + 1) if p is not None else None for p in (sl.lower, sl.upper, sl.step)]
                given = [p is not None for p in (sl.lower, sl.upper, sl.step)]
                if any(g and not isinstance(p, int) for g, p in zip(given, parts)):
                    return None
                if parts[2] == 0:
                    return None
                return base[slice(*parts)]
            idx = val(sl, depth + 1)
            if isinstance(idx, int) and isinstance(base, (str, list)) and -len(base) <= idx < len(base):
                return base[idx]
            return None
        if isinstance(node, ast.Call) and not node.keywords:
            return self._call(node, depth)
        return None

    def _call(self, node: ast.Call, depth: int) -> Any:
        val = self.value
        fn = node.func
        args = [val(a, depth + 1) for a in node.args]
        if isinstance(fn, ast.Name):
            name = fn.id
            if name == "chr" and len(args) == 1 and isinstance(args[0], int) and 0 <= args[0] < 0x110000:
                return chr(args[0])
            if name in ("str",) and len(args) == 1 and isinstance(args[0], str):
                return args[0]
            if name in ("bytes", "bytearray") and len(args) == 1 and isinstance(args[0], list) \
                    and all(isinstance(i, int) and 0 <= i < 256 for i in args[0]):
                return bytes(args[0])
            if name in ("bytes", "bytearray") and len(args) == 2 and isinstance(args[0], str):
                return args[0].encode() if args[1] in ("utf-8", "utf8", "ascii", "latin-1") else None
            if name in ("reversed", "list") and len(args) == 1 and isinstance(args[0], (str, list)):
                seq = list(args[0])
                return seq[::-1] if name == "reversed" else seq
            if name == "map" and len(node.args) == 2 and isinstance(node.args[0], ast.Name) \
                    and node.args[0].id == "chr" and isinstance(args[1], list) \
                    and all(isinstance(i, int) and 0 <= i < 0x110000 for i in args[1]):
                return [chr(i) for i in args[1]]
            imported = self.modules.get(name, "")
            if imported.startswith(("base64.", "binascii.")):
                return self._module_call(imported.split(".", 1)[0], imported.split(".", 1)[1], args)
            if imported == "codecs.decode":
                return self._module_call("codecs", "decode", args)
            return None
        if not isinstance(fn, ast.Attribute):
            return None
        attr = fn.attr
        if isinstance(fn.value, ast.Name) and fn.value.id in self.modules:
            return self._module_call(self.modules[fn.value.id], attr, args)
        if isinstance(fn.value, ast.Name) and fn.value.id in ("bytes", "bytearray") and attr == "fromhex" \
                and len(args) == 1 and isinstance(args[0], str):
            try:
                return bytes.fromhex(args[0])
            except ValueError:
                return None
        obj = val(fn.value, depth + 1)
        if obj is None or any(a is None for a in args):
            return None
        if attr == "join" and isinstance(obj, (str, bytes)) and len(args) == 1 and isinstance(args[0], (list, str)):
            items = list(args[0])
            if all(isinstance(i, type(obj)) for i in items):
                return obj.join(items)
            return None
        if attr == "decode" and isinstance(obj, (bytes, bytearray)):
            try:
                return bytes(obj).decode(*[a for a in args if isinstance(a, str)][:1])
            except (UnicodeDecodeError, LookupError):
                return None
        if attr == "encode" and isinstance(obj, str):
            try:
                return obj.encode(*[a for a in args if isinstance(a, str)][:1])
            except (UnicodeEncodeError, LookupError):
                return None
        if attr in ("lower", "upper", "strip", "lstrip", "rstrip", "swapcase", "title", "capitalize") \
                and isinstance(obj, (str, bytes)) and not args:
            return getattr(obj, attr)()
        if attr == "replace" and isinstance(obj, str) and len(args) == 2 and all(isinstance(a, str) for a in args):
            return obj.replace(args[0], args[1])
        if attr == "format" and isinstance(obj, str) and all(isinstance(a, (str, int)) for a in args):
            try:
                return obj.format(*args)
            except (IndexError, KeyError, ValueError):
                return None
        return None

    @staticmethod
    def _module_call(module: str, attr: str, args: list[Any]) -> Any:
        if module in ("base64", "binascii") and len(args) == 1:
            return _decode_b64(args[0], attr)
        if module == "codecs" and attr == "decode" and len(args) == 2 and isinstance(args[1], str):
            enc = args[1].lower().replace("-", "_")
            data = args[0]
            try:
                if enc in ("rot13", "rot_13") and isinstance(data, str):
                    return codecs.decode(data, "rot13")
                if enc in ("hex", "hex_codec", "base64", "base64_codec") and isinstance(data, (str, bytes)):
                    raw = data.encode() if isinstance(data, str) else data
                    return codecs.decode(raw, enc if "codec" in enc else enc + "_codec")
            except (ValueError, binascii.Error):
                return None
        return None


def _modules(nodes: list[ast.AST]) -> dict[str, str]:
    """Local name -> the module (or module.function) it stands for: ``import builtins as
    b``, ``from base64 import b64decode``, ``m = __import__('builtins')``."""
    out: dict[str, str] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _bound_constants(nodes: list[ast.AST], consts: _Consts) -> dict[str, Any]:
    """Names assigned exactly once, to a constant expression (resolved in order)."""
    counts: dict[str, int] = {}
    assigns: list[tuple[str, ast.AST]] = []
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            counts[node.id] = counts.get(node.id, 0) + 1
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigns.append((node.targets[0].id, node.value))
    for name, value in assigns:
        if counts.get(name) == 1:
            v = consts.value(value)
            if v is not None:
                consts.names[name] = v
            elif isinstance(value, ast.Call) and _import_target(value, consts) is not None:
                consts.modules[name] = _import_target(value, consts) or ""
    return consts.names


def _import_target(node: ast.Call, consts: _Consts) -> str | None:
    """The module ``__import__('x')`` / ``importlib.import_module('x')`` loads, if constant."""
    fn = node.func
    is_import = (isinstance(fn, ast.Name) and (fn.id == "__import__" or consts.modules.get(fn.id) ==
                                                 "importlib.import_module")) or \
        (isinstance(fn, ast.Attribute) and fn.attr == "import_module" and isinstance(fn.value, ast.Name)
         and consts.modules.get(fn.value.id) == "importlib") or \
        (isinstance(fn, ast.Attribute) and fn.attr == "__import__")
    if not is_import or not node.args:
        return None
    v = consts.value(node.args[0])
    return v if isinstance(v, str) else None


class _Normalise(ast.NodeTransformer):
    """Replaces constant expressions with their literal and computed-name lookups
    (``getattr(m, 'ex' + 'ec')``, ``vars(m)['exec']``) with the attribute they reach."""

    def __init__(self, consts: _Consts) -> None:
        self.consts = consts
        self.changed = False

    def generic_visit(self, node: ast.AST) -> ast.AST:
        node = super().generic_visit(node)
        if isinstance(node, ast.expr) and not isinstance(node, (ast.Constant, ast.Name, ast.List, ast.Tuple)):
            v = self.consts.value(node)
            if isinstance(v, (str, bytes)):
                self.changed = True
                return ast.copy_location(ast.Constant(v), node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) in (2, 3) and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str) and node.args[1].value.isidentifier():
            self.changed = True
            return ast.copy_location(ast.Attribute(node.args[0], node.args[1].value, ast.Load()), node)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str) and node.slice.value.isidentifier():
            owner = _namespace_owner(node.value)
            if owner is not None:
                self.changed = True
                return ast.copy_location(ast.Attribute(owner, node.slice.value, ast.Load()), node)
        return node


def _namespace_owner(node: ast.AST) -> ast.expr | None:
    """``vars(m)`` / ``m.__dict__`` -> m (a subscript of it is an attribute of m)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "vars" \
            and len(node.args) == 1:
        return node.args[0]
    if isinstance(node, ast.Attribute) and node.attr == "__dict__":
        return node.value
    return None


def _parse(code: str) -> ast.AST | None:
    if len(code) > _MAX_CODE or not _GATE.search(code):
        return None
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


@functools.lru_cache(maxsize=64)
def fold_python(code: str) -> str | None:
    """Python ``code`` with its constant string expressions folded to literals and
    constant-name lookups written as the attribute they reach (``getattr(b, 'ex' +
    'ec')(x)`` -> ``b.exec(x)``); None when the code is not Python or nothing folds."""
    tree = _parse(code)
    if tree is None:
        return None
    try:
        nodes = list(ast.walk(tree))
        consts = _Consts({}, _modules(nodes))
        _bound_constants(nodes, consts)
        norm = _Normalise(consts)
        tree = norm.visit(tree)
        if not norm.changed:
            return None
        return ast.unparse(tree)
    except (RecursionError, ValueError, TypeError, AttributeError):
        return None


def _module_of(node: ast.AST, consts: _Consts) -> str | None:
    """The module an expression denotes: an imported name, ``__import__('x')``,
    ``importlib.import_module('x')``, ``sys.modules['x']``, or ``__builtins__``."""
    if isinstance(node, ast.Name):
        if node.id == "__builtins__":
            return "builtins"
        return consts.modules.get(node.id)
    if isinstance(node, ast.Call):
        return _import_target(node, consts)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
            and node.value.attr == "modules":
        v = consts.value(node.slice)
        return v if isinstance(v, str) else None
    if isinstance(node, ast.Subscript):  # globals()['__builtins__']
        v = consts.value(node.slice)
        if v == "__builtins__":
            return "builtins"
    return None


def _is_plain(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant)


@functools.lru_cache(maxsize=64)
def python_dynamic_exec(code: str) -> bool:
    """Does Python ``code`` reach a code runner through a computed name? A lookup on
    the builtins module (``getattr``, ``vars(...)[...]``, ``__dict__[...]``) whose name is
    computed (folded to exec/eval/compile/__import__, or not constant at all), a
    computed process-runner lookup on os/subprocess/pty, or an import whose module name
    is spelled so no literal shows it (``import_module('url' + 'lib.request')``).
    A plugin loader's ``getattr(module, name)`` on its own modules and
    ``import_module(name)`` with a variable name are not. ``vars(__builtins__)["exec"]``
    counts even written out: no honest code looks a code runner up in a namespace."""
    if not any(g in code for g in ("getattr", "import", "vars(", "__dict__", "__builtins__")):
        return False
    tree = _parse(code)
    if tree is None:
        return False
    try:
        nodes = list(ast.walk(tree))
        consts = _Consts({}, _modules(nodes))
        _bound_constants(nodes, consts)
        for node in nodes:
            target: ast.AST | None = None
            name_node: ast.AST | None = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                    and len(node.args) >= 2:
                target, name_node = node.args[0], node.args[1]
            elif isinstance(node, ast.Subscript) and _namespace_owner(node.value) is not None:
                target, name_node = _namespace_owner(node.value), node.slice
            elif isinstance(node, ast.Subscript) and _module_of(node.value, consts) in _BUILTIN_MODULES:
                target, name_node = node.value, node.slice  # __builtins__['exec'] (a dict)
            elif isinstance(node, ast.Call) and node.args and _import_call(node, consts) \
                    and not _is_plain(node.args[0]) and isinstance(consts.value(node.args[0]), str):
                return True  # an import whose module name is spelled, not written
            if target is None or name_node is None:
                continue
            module = _module_of(target, consts)
            if module not in _BUILTIN_MODULES and module not in _RUNNER_MODULES:
                continue
            name = consts.value(name_node)
            if _is_plain(name_node) and not (module in _BUILTIN_MODULES and name in _CODE_RUNNERS):
                continue  # getattr(os, 'getcwd'): written, read by the scanners as is
            if not isinstance(name, str):
                if module in _BUILTIN_MODULES or module == "importlib":
                    return True  # a builtin chosen at run time by a computed name
                continue
            if name in _CODE_RUNNERS or (module in _RUNNER_MODULES and _PROC_RUNNERS.match(name)):
                return True
    except (RecursionError, ValueError, TypeError, AttributeError):
        return False
    return False


def _import_call(node: ast.Call, consts: _Consts) -> bool:
    fn = node.func
    if isinstance(fn, ast.Name):
        return fn.id == "__import__" or consts.modules.get(fn.id) == "importlib.import_module"
    return isinstance(fn, ast.Attribute) and (fn.attr == "__import__" or (
        fn.attr == "import_module" and isinstance(fn.value, ast.Name)
        and consts.modules.get(fn.value.id) == "importlib"))


# -- Tcl ------------------------------------------------------------------------------

_TCL_LIKE = re.compile(r"\[\s*(?:string|file|binary|format|join|lreverse|encoding|open|socket|exec|"
                       r"http::|::http::)\b|^\s*(?:package\s+require|set\s+\w+\s+\[|proc\s+\w+\s+\{)",
                       re.MULTILINE)
_TCL_HOME = re.compile(r"\$(?:::)?env\(HOME\)|\$\{(?:::)?env\(HOME\)\}|\[\s*file\s+normalize\s+~\s*\]"
                       r"|\[\s*file\s+home\s*\]")
_TCL_INNER = re.compile(r"\[([^\[\]\n]{1,2000})\]")
_TCL_SET = re.compile(r"^[ \t]*set[ \t]+(\w+)[ \t]+(\"[^\"\\$\[\n]*\"|\{[^{}\n]*\}|[^\s\"{}\[\]$;]+)[ \t]*;?[ \t]*$",
                      re.MULTILINE)
_TCL_WORD = re.compile(r"\"([^\"\\$\[]*)\"|\{([^{}]*)\}|([^\s\"{}\[\]$;\\]+)|(\S)")
# commands whose result hides a name: run-time spelling, not a plain word
_TCL_CONCEALING = frozenset({"string reverse", "string map", "binary decode", "format",
                             "encoding convertfrom", "lreverse"})


def _tcl_words(text: str) -> list[str] | None:
    """The words of a Tcl command whose words are all constant (no $, no [...])."""
    words: list[str] = []
    for m in _TCL_WORD.finditer(text):
        if m.group(4) is not None:
            return None  # $var, an escape, an unbalanced brace: not constant
        words.append(next(g for g in (m.group(1), m.group(2), m.group(3)) if g is not None))
    return words


def _tcl_list(text: str) -> list[str]:
    return [w for w in (_tcl_words(text) or text.split())]


def _tcl_eval(words: list[str]) -> tuple[str, str] | None:
    """(result, command) of a constant Tcl command from the folded set, else None."""
    if not words:
        return None
    cmd, args = words[0].lstrip(":"), words[1:]
    sub = args[0] if args else ""
    try:
        if cmd == "string" and sub == "reverse" and len(args) == 2:
            return args[1][::-1], "string reverse"
        if cmd == "string" and sub == "cat":
            return "".join(args[1:]), "string cat"
        if cmd == "string" and sub in ("tolower", "toupper", "trim") and len(args) == 2:
            return {"tolower": str.lower, "toupper": str.upper, "trim": str.strip}[sub](args[1]), "string"
        if cmd == "string" and sub == "map" and len(args) == 3:
            pairs = _tcl_list(args[1])
            out, s, i = [], args[2], 0
            while i < len(s):
                for k, v in zip(pairs[::2], pairs[1::2]):
                    if k and s.startswith(k, i):
                        out.append(v)
                        i += len(k)
                        break
                else:
                    out.append(s[i])
                    i += 1
            return "".join(out), "string map"
        if cmd == "string" and sub == "range" and len(args) == 4:
            end = len(args[1]) - 1 if args[3] == "end" else int(args[3])
            return args[1][int(args[2]):end + 1], "string"
        if cmd == "join" and len(args) in (1, 2):
            return (args[1] if len(args) == 2 else " ").join(_tcl_list(args[0])), "join"
        if cmd == "lreverse" and len(args) == 1:
            return " ".join(_tcl_list(args[0])[::-1]), "lreverse"
        if cmd == "list":
            return " ".join(args), "list"
        if cmd == "file" and sub == "join" and len(args) >= 2:
            return posixpath.join(*args[1:]), "file join"
        if cmd == "binary" and sub == "decode" and len(args) == 3 and args[1] in ("base64", "hex"):
            raw = base64.b64decode(args[2]) if args[1] == "base64" else bytes.fromhex(args[2])
            return raw.decode(), "binary decode"
        if cmd == "format" and args and "%" in args[0]:
            fmt = re.sub(r"%c", "%s", args[0])
            vals = [chr(int(a)) if spec == "c" else a
                    for spec, a in zip(re.findall(r"%([a-z])", args[0]), args[1:])]
            if re.fullmatch(r"(?:[^%]|%[sc])*", args[0]):
                return fmt % tuple(vals), "format"
    except (ValueError, TypeError, UnicodeDecodeError, IndexError, binascii.Error):
        return None
    return None


@functools.lru_cache(maxsize=64)
def _tcl_fold(code: str) -> tuple[str, bool]:
    if len(code) > _MAX_CODE or not _TCL_LIKE.search(code):
        return code, False
    out = _TCL_HOME.sub("~", code)
    concealed = False
    sets: dict[str, str] = {}
    for m in _TCL_SET.finditer(out):
        raw = m.group(2)
        value = raw[1:-1] if raw[:1] in "\"{" else raw
        sets[m.group(1)] = "" if m.group(1) in sets else value  # set twice: unknown
    count = {n: len(re.findall(rf"^[ \t]*set[ \t]+{re.escape(n)}\b", out, re.M)) for n in sets}
    for _ in range(64):
        def sub(m: re.Match[str]) -> str:
            nonlocal concealed
            words = _tcl_words(m.group(1))
            res = _tcl_eval(words) if words is not None else None
            if res is None or len(res[0]) > _MAX_VALUE or re.search(r"[\"\\$\[\]\n]", res[0]):
                return m.group(0)
            concealed = concealed or res[1] in _TCL_CONCEALING
            return f'"{res[0]}"'
        for name, value in sets.items():
            if value and count.get(name) == 1 and not re.search(r"[\"\\$\[\]\s]", value):
                out = re.sub(rf"\$\{{?{re.escape(name)}\}}?(?![\w(])", value, out)
        new = _TCL_INNER.sub(sub, out)
        # a command substitution folded to one word and bound once: `set p [...]` -> `set p "x"`
        for m in _TCL_SET.finditer(new):
            raw = m.group(2)
            value = raw[1:-1] if raw[:1] in "\"{" else raw
            if m.group(1) not in sets and len(re.findall(rf"^[ \t]*set[ \t]+{re.escape(m.group(1))}\b", new, re.M)) == 1:
                sets[m.group(1)] = value
                count[m.group(1)] = 1
        if new == out:
            break
        out = new
    return out, concealed


def fold_tcl(code: str) -> str | None:
    """Tcl ``code`` with its constant command substitutions folded (``[string reverse
    swa.]`` -> ``".aws"``, ``[file join $env(HOME) .aws credentials]`` ->
    ``"~/.aws/credentials"``, ``[binary decode base64 ...]``, ``[format %c%c 105 100]``)
    and variables bound once to a constant replaced by it; None when nothing folds."""
    out, _ = _tcl_fold(code)
    return out if out != code else None


def tcl_computed_name(code: str) -> bool:
    """Tcl code that builds a name at run time from a spelling that hides it (string
    reverse, string map, binary decode, format %c, lreverse): evidence of concealment
    when the code also talks to the network."""
    return _tcl_fold(code)[1]


# Perl: a constant string is a single-quoted literal or a double-quoted one with nothing
# interpolated ($, @) and no escape; numbers are decimal or hex.
_PL_LIT = r"(?:'[^'\\\n]*'|\"[^\"\\\n$@]*\")"
_PL_ARG = rf"(?:{_PL_LIT}|\d{{1,10}}|0x[0-9a-fA-F]{{1,8}})"
_PL_ARGS = rf"{_PL_ARG}(?:\s*,\s*{_PL_ARG}){{0,63}}"
# every literal is matched (alone or joined) so that scanning never starts a literal at
# another literal's closing quote ('a'], 'b' is two literals, not "], ")
_PL_CONCAT = re.compile(rf"({_PL_LIT})\s*\.(?!\.)\s*({_PL_LIT})|{_PL_LIT}|['\"]")
# the whole argument list must be constant: join(SEP, LIST), join(SEP, (LIST)), join SEP, LIST;
_PL_END = r"(?=\s*(?:[;)}\]]|$))"
_PL_JOIN = re.compile(rf"\bjoin\s*\(\s*({_PL_LIT})\s*,\s*\(?\s*({_PL_ARGS})\s*\)?\s*\)"
                      rf"|\bjoin\s+({_PL_LIT})\s*,\s*\(?\s*({_PL_ARGS})\s*\)?{_PL_END}")
# reverse of one string in scalar context: `scalar reverse "x"`, an operand of `.`,
# or assigned to a scalar (`$n = reverse "x"`); a list reverse of one item is the item
_PL_REVERSE = re.compile(rf"(\bscalar\s*\(?\s*|\.\s*|\$\w+\s*=\s*)reverse\s*\(?\s*({_PL_LIT})\s*\)?(\s*\))?"
                         rf"|\breverse\s*\(\s*({_PL_LIT})\s*\)(?=\s*\.(?!\.))")
_PL_CASE = re.compile(rf"\b(lc|uc)\s*\(?\s*({_PL_LIT})\s*\)?")
_PL_SPRINTF = re.compile(rf"\bsprintf\s*\(\s*({_PL_LIT})\s*,\s*({_PL_ARGS})\s*\)"
                         rf"|\bsprintf\s+({_PL_LIT})\s*,\s*({_PL_ARGS}){_PL_END}")


def _pl_value(text: str) -> str | int:
    if text[:1] in "'\"":
        return text[1:-1]
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def _pl_quote(text: str) -> str | None:
    if len(text) > _MAX_VALUE or "\n" in text or "\\" in text:
        return None
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text and "$" not in text and "@" not in text:
        return f'"{text}"'
    return None


def _pl_args(text: str) -> list[str | int]:
    return [_pl_value(a) for a in re.findall(rf"{_PL_LIT}|0x[0-9a-fA-F]+|\d+", text)]


def _pl_sprintf(m: re.Match[str]) -> str:
    fmt = str(_pl_value(m.group(1) or m.group(3)))
    if re.search(r"%(?![-0-9]*[sdcx%])", fmt):
        return m.group(0)
    args = _pl_args(m.group(2) or m.group(4))
    out: list[str] = []
    pos = 0
    for spec in re.finditer(r"%([-0-9]*)([sdcx%])", fmt):
        out.append(fmt[pos:spec.start()])
        pos = spec.end()
        if spec.group(2) == "%":
            out.append("%")
            continue
        if not args:
            return m.group(0)
        v = args.pop(0)
        try:
            if spec.group(2) == "c":
                out.append(chr(int(v)))
            elif spec.group(2) in "dx":
                out.append(format(int(v), "x" if spec.group(2) == "x" else "d"))
            else:
                out.append(str(v))
        except (ValueError, OverflowError):
            return m.group(0)
    out.append(fmt[pos:])
    q = _pl_quote("".join(out))
    return q if q is not None else m.group(0)


def fold_perl(code: str) -> str | None:
    """Perl ``code`` with its constant string expressions folded: ``"env" . "iron"``,
    ``join("", "/pr", "oc")``, ``scalar reverse "norivne"``, ``sprintf("%s%s", ...)``
    (%s %d %c %x), ``lc``/``uc`` of a literal; None when nothing folds. Only these pure
    operations on literals are evaluated."""
    if len(code) > _MAX_CODE or not re.search(r"['\"]\s*\.|\bjoin\b|\breverse\b|\bsprintf\b|\b(?:lc|uc)\b", code):
        return None
    out = code

    def lit(text: str, m: re.Match[str]) -> str:
        q = _pl_quote(text)
        return q if q is not None else m.group(0)

    def rev(m: re.Match[str]) -> str:
        if m.group(4):
            return lit(str(_pl_value(m.group(4)))[::-1], m)
        prefix = "" if m.group(1).lstrip().startswith("scalar") else m.group(1)
        return prefix + lit(str(_pl_value(m.group(2)))[::-1], m)

    for _ in range(32):
        new = _PL_CONCAT.sub(lambda m: lit(str(_pl_value(m.group(1))) + str(_pl_value(m.group(2))), m)
                             if m.group(1) else m.group(0), out)
        new = _PL_JOIN.sub(lambda m: lit(str(_pl_value(m.group(1) or m.group(3))).join(
            str(v) for v in _pl_args(m.group(2) or m.group(4))), m), new)
        new = _PL_REVERSE.sub(rev, new)
        new = _PL_CASE.sub(lambda m: lit(str(_pl_value(m.group(2))).lower() if m.group(1) == "lc"
                                         else str(_pl_value(m.group(2))).upper(), m), new)
        new = _PL_SPRINTF.sub(_pl_sprintf, new)
        if new == out:
            break
        out = new
    return out if out != code else None
