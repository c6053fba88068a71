"""Interpreter one-liners: find the code in argv and say what it does.

``python -c``, ``perl -e``, ``ruby -e``, ``node -e``, ``php -r``, ``lua -e``, awk
programs and friends are where reverse shells, miners and droppers hide from
command-name rules. We do not execute anything: we look for the *capabilities* the
code uses (sockets, process spawning, fd duplication, hashing in a loop, file writes,
HTTP fetches) and report them as features that rules combine.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from .constfold import fold_perl, fold_python, fold_tcl, python_dynamic_exec, tcl_computed_name
from .stratum import STRATUM_METHOD

__all__ = ["INTERPRETERS", "code_features", "embedded_commands", "fold_strings", "interpreter_code",
           "interpreter_lang", "web_shell"]

# name -> language; names are matched after stripping version suffixes (python3.11).
INTERPRETERS = {
    "python": "python", "python2": "python", "python3": "python", "pypy": "python",
    "pypy3": "python", "perl": "perl", "perl5": "perl", "ruby": "ruby", "irb": "ruby",
    "node": "node", "nodejs": "node", "deno": "node", "bun": "node", "php": "php",
    "lua": "lua", "luajit": "lua", "awk": "awk", "gawk": "awk", "mawk": "awk",
    "nawk": "awk", "busybox-awk": "awk", "julia": "julia", "r": "r", "rscript": "r",
    "tclsh": "tcl", "wish": "tcl", "expect": "tcl", "jrunscript": "java", "jjs": "java", "groovy": "java",
    "osascript": "js", "pwsh": "powershell", "powershell": "powershell",
    "crystal": "crystal", "elixir": "elixir", "iex": "elixir", "scala": "java",
    "kotlin": "java", "dart": "dart", "erl": "erlang", "escript": "erlang",
}
_CODE_FLAGS = {
    "python": ("-c",), "perl": ("-e", "-E"), "ruby": ("-e",), "node": ("-e", "--eval", "-p",
    "--print", "eval"), "php": ("-r",), "lua": ("-e",), "julia": ("-e", "--eval"),
    "r": ("-e",), "tcl": ("-c",), "java": ("-e",), "js": ("-e",),
    "powershell": ("-c", "-command", "-Command", "-EncodedCommand", "-enc"),
    "crystal": ("eval", "-e"), "elixir": ("-e", "--eval"), "dart": ("-e",),
    "erlang": ("-eval", "-s"),
}
_VERSION = re.compile(r"^([a-z]+?)(?:-?[0-9][0-9.]*)?$")


def interpreter_lang(name: str) -> str | None:
    low = name.lower()
    lang = INTERPRETERS.get(low)
    if lang is None:
        m = _VERSION.match(low)
        if m:
            lang = INTERPRETERS.get(m.group(1))
    return lang


def interpreter_code(lang: str, argv: list[str]) -> list[str]:
    """The inline program(s) in argv, if any."""
    out: list[str] = []
    args = argv[1:]
    if lang == "awk":
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-f", "--file"):
                return out
            if a in ("-v", "-F", "--assign", "--field-separator"):
                i += 2
                continue
            if a.startswith("-") and len(a) > 1:
                i += 1
                continue
            out.append(a)
            return out
        return out
    flags = _CODE_FLAGS.get(lang, ())
    for i, a in enumerate(args):
        if a in flags and i + 1 < len(args):
            out.append(args[i + 1])
        elif lang in ("perl", "ruby") and re.match(r"^-[a-zA-Z]*[eE]$", a) and i + 1 < len(args):
            out.append(args[i + 1])  # perl -ne '...', perl -MIO -e
        else:
            for flag in flags:
                if len(flag) == 2 and a.startswith(flag) and len(a) > 2:
                    out.append(a[2:])  # attached form: -e'code', -c'code'
                    break
    return out


_P = re.IGNORECASE
_FEATURES: list[tuple[str, re.Pattern[str]]] = [
    ("interp_socket", re.compile(
        r"socket|fsockopen|tcpsocket|tcpserver|udpsocket|io::socket|\bnet\.(?:socket|connect|"
        r"createconnection|createserver)|require\(['\"](?:node:)?(?:net|tls)['\"]\)|\btls\.connect|/inet/(?:tcp|udp)/|"
        r"stream_socket_|socket_create|sock_stream|\bnet\.dial|dial\(|new-object\s+"
        r"system\.net\.sockets|tcpclient|ztcp|connect\s*\(\s*[\[(]?['\"]?\d", _P)),
    ("interp_bind", re.compile(
        r"\.bind\(|\bbind\s*\(|\.listen\(|\blisten\s*\(|\baccept\s*\(|tcpserver|createserver|"
        r"localport|socket_bind|stream_socket_server|/inet/tcp/\d+/0/0", _P)),
    ("interp_exec", re.compile(
        r"subprocess|os\.system|os\.popen|os\.exec|os\.spawn|pty\.spawn|popen|\bsystem\s*\(|"
        r"\bsystem\s+['\"]|\bexec\s*[(\s'\"]|proc_open|shell_exec|passthru|child_process|"
        r"execsync|spawn\(|kernel\.exec|%x\(|runtime\.getruntime|os\.execute|io\.popen|"
        r"processbuilder|`[^`]+`|\|&?\s*getline|\bsystem\b|run\(\s*`|exec\.command|"
        r"process\.start|process\.new|callcommand|readprocess|execve|execl|"
        r"\.exec\(|shell\s*:\s*true", _P)),
    ("interp_shell", re.compile(
        r"/bin/(?:ba|z|da|k|c|tc|a)?sh\b|['\"](?:ba|z|da)?sh['\"]|\bsh\s+-i\b|bash\s+-i|"
        r"\bexec\s+(?:ba|z|da)?sh\s+-c\b|cmd\.exe|powershell", _P)),
    ("interp_dup2", re.compile(
        r"dup2|os\.dup\b|fileno\(\)|fdopen|open\(\s*stdin|open\(\s*stdout|\bstdin\b.*>&|"
        r"reopen|\.pipe\(\s*\w+\.std(?:in|out)|stdio\s*:\s*\[", _P)),
    ("interp_hash", re.compile(
        r"hashlib|sha256|sha1|md5|createhash|digest::|scrypt|keccak|randomx|"
        r"blake2|crypto\.subtle", _P)),
    ("interp_loop", re.compile(r"\bwhile\b|\bfor\b|\bloop\b|\brepeat\b|setinterval|\.times", _P)),
    ("interp_file_write", re.compile(
        r"open\([^)]*['\"][wa]b?\+?['\"]|\.write\(|writefile|file\.write|file_put_contents|"
        r"fwrite|open\s*\(?\s*\w*\s*,\s*['\"]?>|open\s*\(\s*(?:my\s+)?\$?\w+\s*,\s*['\"][>+]|print\s*>\s*['\"]|io\.open\([^)]*['\"]w|"
        r"chmod|os\.rename|shutil\.(?:copy|move)", _P)),
    ("interp_http", re.compile(
        r"urllib|urlopen|requests\.|http\.client|httplib|https?\.get|fetch\(|lwp|"
        r"net::http|http::tiny|open-uri|file_get_contents\(\s*['\"]https?|curl_exec|"
        r"invoke-webrequest|downloadstring|webclient|https?://|"
        r"require\(\s*['\"](?:node:)?https?['\"]\s*\)", _P)),
    ("interp_eval", re.compile(
        r"\beval\s*\(|\bexec\s*\(|\bexec\s+['\"]|compile\(|function\s*\(\s*\)\s*\{|"
        r"instance_eval|loadstring|\bload\s*\(|"
        # perl/ruby string eval of a variable or an interpolated string (not a block
        # eval { ... }, not eval "require X; 1" of constant text)
        r"\beval\s+(?:\$|\"[^\"\n]*\$|qq\s*\W[^\n]*\$)", _P)),
    ("interp_file_read", re.compile(
        r"(?<![\w.])open\s*\(\s*(?:r?['\"]|[a-z_]*path|f['\"]|os\.path)|\.read_(?:text|bytes)\(|"
        r"file_get_contents\(\s*['\"$]|File\.(?:read|open|binread)|readfilesync|createreadstream|"
        r"io\.open\(|<\s*\$?\w*(?:file|fh)\w*>|open\s*\(\s*(?:my\s+)?\$?\w+\s*,\s*['\"]<|"
        r"slurp|ioutil\.readfile|os\.readfile|getline\s*<|"
        # perl/ruby open of a handle with a mode or path: open F, "<", "x"; open(my $f, "x")
        r"\bopen\s*\(?\s*(?:my\s+)?\$?[A-Za-z_]\w*\s*,\s*['\"]|\bfopen\s*\(|IO\.(?:read|readlines|binread)\b", _P)),
    ("interp_upload", re.compile(
        r"\.post\(|\.put\(|method\s*=\s*['\"](?:post|put)|\bsendall?\s*\(|[.:]send\(|\.write\(|"
        r"urlopen\([^()]*(?:\([^()]*\)[^()]*)*,|request\([^)]*data|"
        r"data\s*=|files\s*=|upload|urlencode|syswrite|print\s+\$?sock|\bputs\b|fwrite\(\s*\$s", _P)),
    ("interp_base64", re.compile(
        r"b64decode|base64_decode|decode_base64|base64\.decode|atob\(|['\"]base64['\"]|"
        r"frombase64string|unpack\(['\"]m", _P)),
]


_WEB_INPUT = re.compile(r"\$_(?:GET|POST|REQUEST|COOKIE|SERVER\[['\"]HTTP_)|request\.getparameter|"
                        r"request\.(?:args|form|querystring)\b|req\.query\.", _P)
_WEB_EXEC = re.compile(r"\b(?:system|exec|passthru|shell_exec|popen|proc_open|pcntl_exec|"
                       r"runtime|processbuilder)\b|`\$_", _P)
_CONNECT = re.compile(r"\.connect\s*\(|create_?connection|fsockopen|tcpsocket\.(?:new|open)|"
                      r"socket\.tcp|net\.(?:connect|dial)|/inet/(?:tcp|udp)/|io::socket::inet|"
                      r"\bconnect\s*\(|tcpclient|stream_socket_client|peeraddr|ztcp|dial\(|"
                      r"\bsocket\s+(?!-server\b)[\w.$:-]+\s+\d{1,5}\b", _P)  # tcl: socket HOST PORT
# Reading from the connection (what arrives is then run: a command channel).
_RECV = re.compile(r"\brecv\w*\(|[.:]receive\b|[.:]gets\b|socket_read|[.:]readline|"
                   r"\$\w+\s*=\s*<\$?\w+>|\|&\s*getline|[.:]read\(|\bgets\s+\$\w+", _P)
# Copying one stream into another (node's a.pipe(b)): a relay's body without a read loop.
_PIPE_COPY = re.compile(r"\.pipe\(\s*[\w$]+\s*\)", _P)
# Python running a value rather than a command written out: the command a reverse shell
# runs is the data it received (`check_output(data, shell=True)`, `os.system(cmd)`,
# `exec(d)`); a test that recv()s from its own echo server and runs
# `subprocess.run(["git", "status"])` runs nothing it received.
_PY_CODE = re.compile(r"^\s*(?:import|from)\s+\w", re.M)
_PY_RUNS_VALUE = re.compile(
    r"\b(?:system|popen|Popen|run|call|check_call|check_output|getoutput|getstatusoutput|"
    r"exec|eval|spawn\w*|exec[lv]p?e?)\s*\(\s*(?![\[\(\"'\s)]|[rbfuRBFU]{1,2}[\"'])"
    r"|\bshell\s*=\s*True")
_FD_PASS = re.compile(r"fileno|std(?:in|out|err)\s*[=:]|\[:in,|>&\s*\$?\w|<&\s*\d|dup2?\b", _P)
_PROC_NAME = re.compile(r"PR_SET_NAME|prctl\(\s*15\b|setproctitle|\$0\s*=\s*['\"]\[?k", _P)
_SPIN = re.compile(r"while\s*\(?\s*(?:true|1|!0)\s*\)?\s*[:{]|while\s*:|for\s*\(\s*;\s*;|"
                   r"itertools\.count\(|\bcount\(\)|range\(\s*(?:\d{7,}|2\s*\*\*|10\s*\*\*|"
                   r"sys\.maxsize|1e\d|float)|\bloop\s*(?:do|\{)|nonce\s*\+=|nonce\s*\+\+", _P)
_SETUID_ROOT = re.compile(r"set(?:e|re|res)?uid\s*\(\s*0\b|Process::Sys\.setuid\(\s*0|"
                          r"POSIX::setuid\(\s*0|\$<\s*=\s*0|\$>\s*=\s*0", _P)
_PTRACE = re.compile(r"PTRACE_ATTACH|PTRACE_SEIZE|PTRACE_POKE\w*|process_vm_writev|"
                     r"ptrace\(\s*(?:16|0x10|0x4206)\b", _P)
_FORK = re.compile(r"\bos\.fork\(\)|\bfork\(\s*\)|pcntl_fork|Process\.fork|child_process\.fork", _P)
_SHELLCODE = re.compile(r"(?:\\x[0-9a-fA-F]{2}){24,}")
_LOOP_HEAD = re.compile(r"^([ \t]*)(?:while\b|for\b|loop\b|until\b|do\b)[^\n]*?(?::|\{|\bdo\b)[ \t]*(.*)$",
                        re.MULTILINE)


def _fork_in_loop(code: str) -> bool:
    """fork() called again and again: inside a loop's body (the lines indented under
    its head, or the rest of its line), not once or twice before a loop, which is how
    a daemon detaches (the double fork) and then works in its loop."""
    if re.search(r"\bfork\b\s*(?:\(\s*\))?\s*(?:while|until|for|foreach)\b", code):
        return True  # perl's statement modifier: fork while 1
    if not _FORK.search(code):
        return False
    lines = code.splitlines()
    for m in _LOOP_HEAD.finditer(code):
        if _FORK.search(m.group(2)):
            return True  # while True: os.fork()  /  while(1){fork();}
        indent = len(m.group(1).expandtabs())
        start = code.count("\n", 0, m.start()) + 1
        for line in lines[start:start + 200]:
            if not line.strip():
                continue
            if len(line) - len(line.lstrip()) <= indent and not line.lstrip().startswith(("}", "except", "else")):
                break
            if _FORK.search(line):
                return True
    return False


_HASH_CALL = (r"(?:hashlib\.\w+|\bsha(?:1|224|256|384|512|3_\w+)|\bmd5|\bblake2\w*|\bblake3|"
              r"\bkeccak\w*|\bscrypt|createhash|digest::\w+|randomx\w*)\s*\(")
_HASH_FED = re.compile(r"\b([A-Za-z_]\w*)\s*=\s*[^\n;]*?" + _HASH_CALL + r"[^\n;]*?\b\1\b", _P)
_COUNTER = re.compile(r"\b([A-Za-z_]\w*)\s*(?:\+=\s*1\b|\+\+)|\+\+\s*\$?([A-Za-z_]\w*)|"
                      r"\bfor\s+([A-Za-z_]\w*)\s+in\s+(?:itertools\.)?count\(", _P)
_LEAVES = re.compile(r"\b(?:break|return|exit|die|last)\b|sys\.exit|os\._exit", _P)
# a loop bounded only by the clock (``while time.time() < end:``), and a hash checked
# against a target inside it (``h.startswith(b"\0\0")``, ``h < target``): proof of work
# for as long as it runs, not a hash-rate benchmark (which checks nothing)
_TIMED = re.compile(r"while\s*\(?\s*(?:time\.(?:time|monotonic|perf_counter)\(\)|time(?:\(\))?|"
                    r"Date\.now\(\)|performance\.now\(\)|Time\.now(?:\.to_f)?|microtime\(\s*true\s*\))"
                    r"\s*<[^\n:{]*[:{]", _P)  # python, perl, node, ruby, php
# a target: a prefix or bytes of the hash compared with zeros (``h[31]===0``,
# ``substr($h,0,2) eq "\0\0"``, ``hex.startsWith('0000')``), or ``h < target``
_TARGET = re.compile(r"\.startswith\(|<=?\s*\w*target\b|int\(\s*\w+\s*,\s*16\s*\)\s*<|"
                     r"\w\[\s*-?\d+\s*\]\s*={2,3}\s*0\b|(?:==|===|\beq)\s*b?[\"'](?:\\0|\\x00|0{3})", _P)


def _loop_bodies(code: str) -> list[tuple[str, str]]:
    """(head line, body) of the unbounded loops in ``code`` (``_SPIN`` heads): the body
    is the rest of the head's line and the lines indented under it, or up to 4 KiB
    after a brace."""
    lines = code.splitlines()
    out: list[tuple[str, str]] = []
    heads = list(_SPIN.finditer(code))
    heads += [m for m in _TIMED.finditer(code)]
    for m in heads:
        line_start = code.rfind("\n", 0, m.start()) + 1
        line_end = code.find("\n", m.end())
        line_end = len(code) if line_end < 0 else line_end
        head = code[line_start:line_end]
        if "{" in head:
            out.append((head, code[m.end():m.end() + 4096]))
            continue
        body = [code[m.end():line_end]]
        indent = len(head) - len(head.lstrip())
        for line in lines[code.count("\n", 0, line_start) + 1:][:400]:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            body.append(line)
        out.append((head, "\n".join(body)))
    return out


def nonce_search(code: str) -> bool:
    """Hashing that only a miner does: in an unbounded loop that nothing leaves
    (no break/return/exit in its body: a toy proof-of-work returns its nonce), a hash
    whose input changes every round because it is a counter (a nonce) or the hash's
    own previous output. Checksumming files, hashing requests in a server loop, or a
    bounded benchmark is none of these."""
    for head, body in _loop_bodies(code):
        if _LEAVES.search(body):
            continue
        if _TIMED.search(head) and not _TARGET.search(body):
            continue  # hashing for a while and checking nothing: a benchmark
        if _HASH_FED.search(body):
            return True
        counters = {n for g in _COUNTER.findall(head + "\n" + body) for n in g if n}
        if not counters:
            continue
        for line in body.splitlines():
            if re.search(_HASH_CALL, line, _P) and any(
                    re.search(rf"\b{re.escape(c)}\b", line) for c in counters):
                return True
    return False


def web_shell(code: str) -> bool:
    """Server-side code that passes request input to a command runner."""
    return _WEB_INPUT.search(code) is not None and _WEB_EXEC.search(code) is not None


# Cheap gates: a feature's regex runs only when one of these (lower-case) appears, so
# long text costs one lower() and a few substring scans for what it cannot contain.
_GATES: dict[str, tuple[str, ...]] = {
    "interp_socket": ("sock", "tcp", "udp", "net", "connect", "dial", "/inet"),
    "interp_bind": ("bind", "listen", "accept", "server", "localport", "/inet"),
    "interp_dup2": ("dup", "fileno", "fdopen", "open(", "stdin", "reopen", "pipe", "stdio"),
    "interp_hash": ("hash", "sha", "md5", "crypt", "keccak", "randomx", "blake", "digest"),
    "interp_http": ("url", "request", "http", "fetch", "lwp", "get", "curl", "webclient",
                    "downloadstring", "open-uri"),
    "interp_base64": ("base64", "b64", "atob", "unpack"),
    "interp_file_read": ("open", "read", "file", "slurp", "getline", "<$", "<"),
    "interp_upload": ("post", "put", "send", "write", "data", "upload", "urlencode", "urlopen",
                      "request", "print $", "print s"),
    "interp_eval": ("eval", "exec", "compile", "function", "loadstring", "load"),
    "interp_shell": ("sh", "cmd.exe", "powershell"),
}


# chmod from code with a set-uid mode: os.chmod(p, 0o4755), perl chmod(04755, $f) or
# chmod(oct("4755"), ...), fs.chmodSync(p, '4755'), File.chmod(04755, p), S_ISUID.
_SETUID_MODE = re.compile(r"chmod\w*\s*\(?[^;\n]{0,200}?(?:\b0o?|\b|['\"])[4-7][0-7]{3}\b"
                          r"|chmod\w*\s*\([^;\n]{0,200}\bS_ISUID\b", re.IGNORECASE)


# A loop's variable (python/perl/js/ruby/php/tcl) and a connection opened with it: one
# connection per value, a sweep of ports or hosts.
_LOOP_VAR = re.compile(r"\bfor\s+(\w+)\s+in\b|\bfor(?:each)?\s+(?:my\s+)?\$(\w+)|\bfor\s*\(\s*(?:let|var|const)?\s*\$?(\w+)\s*="
                       r"|\|\s*(\w+)\s*\||\bforeach\s*\([^)]*\bas\s+\$(\w+)|\bforeach\s+(\w+)\s")
_CONNECT_LINE = re.compile(r"^.*(?:connect_ex|\.connect|create_connection|open_connection|PeerAddr|PeerPort|"
                           r"TCPSocket\.(?:new|open)|Socket\.tcp|net\.connect|fsockopen|\bsocket[ \t]+(?!-server)[\w.$:-]+[ \t]+\S).*$",
                           re.MULTILINE)


def _connects_per_loop_value(code: str) -> bool:
    """A connection whose address or port is the loop's variable (a scanner), to a host
    that is not this machine."""
    names = {n for m in _LOOP_VAR.finditer(code[:65536]) for n in m.groups() if n}
    if not names:
        return False
    for line in _CONNECT_LINE.finditer(code[:65536]):
        text = line.group(0)
        if re.search(r"127\.\d+\.\d+\.\d+|localhost|::1", text):
            continue
        if any(re.search(rf"(?<![\w.])\$?{re.escape(n)}(?!\w)", text) for n in names):
            return True
    return False


def code_features(code: str) -> set[str]:
    low = code.lower()
    feats = {name for name, rx in _FEATURES
             if (name not in _GATES or any(g in low for g in _GATES[name])) and rx.search(code)}
    if ("$_" in code or "getparameter" in low or "request." in low or "req.query" in low) \
            and web_shell(code):
        feats.add("web_shell_code")
    if ("prctl" in low or "pr_set_name" in low or "setproctitle" in low or "$0" in code) \
            and _PROC_NAME.search(code):
        feats.add("set_proc_name")
    if ("ptrace" in low or "process_vm" in low) and _PTRACE.search(code):
        feats.add("ptrace_code")
    if "interp_loop" in feats and "fork" in low and _fork_in_loop(code):
        feats.add("fork_bomb")
    if "interp_loop" in feats and ("connect" in low or "peeraddr" in low or "socket" in low) \
            and _connects_per_loop_value(code):
        feats.add("interp_scan")  # connects once per port/host of a loop: a scanner
    if "chmod" in low and _SETUID_MODE.search(code):
        feats.add("interp_setuid_mode")  # a file made set-uid/gid-root-runnable from code
    if "setuid" in low or "setresuid" in low or "setreuid" in low:
        if _SETUID_ROOT.search(code):
            feats.add("interp_setuid_root")  # becoming uid 0 from code
    if "interp_bind" in feats and "interp_socket" in feats and _CONNECT.search(code) and \
            (_RECV.search(code) or _PIPE_COPY.search(code)) and "interp_socket_exec" not in feats:
        feats.add("interp_relay")  # accepts, connects onwards and copies: a port forwarder
    if "interp_hash" in feats and (_SPIN.search(code) or _TIMED.search(code)) and \
            nonce_search(code):
        feats.add("interp_hash_spin")  # a nonce search: see nonce_search
    if "interp_socket" in feats and ("mining." in low or "method" in low) and \
            _CONNECT.search(code) and STRATUM_METHOD.search(code):
        feats.add("interp_stratum")  # connects and speaks the mining protocol
    if "\\x" in code and _SHELLCODE.search(code):
        feats.add("shellcode_literal")
    if "interp_hash" in feats and "interp_loop" in feats:
        feats.add("interp_hash_loop")
    # A socket that is connected or listening, joined to a shell (or to a process given
    # the socket's fds): not the mere import of socket/ssl next to a subprocess call.
    if "interp_socket" in feats and ("interp_bind" in feats or _CONNECT.search(code)) and (
            "interp_shell" in feats or ("interp_exec" in feats and (
                "interp_dup2" in feats or _FD_PASS.search(code) or (_RECV.search(code) and (
                    not _PY_CODE.search(code) or _PY_RUNS_VALUE.search(code)))))):
        feats.add("interp_socket_exec")
    if "interp_socket" in feats and "interp_dup2" in feats:
        feats.add("interp_socket_dup")
    if ("getattr" in code or "import" in code or "vars(" in code or "__dict__" in code) \
            and python_dynamic_exec(code):
        feats.update(("interp_dynamic_exec", "interp_eval"))  # exec reached by a computed name
    if _TCL_CODE.search(code):
        _tcl_features(code, feats)
    _escape_features(code, low, feats)
    if "interp_http" in feats and "interp_eval" in feats:
        feats.add("interp_download_exec")
    elif "interp_http" in feats and _runs_fetched_text(code):
        feats.add("interp_download_exec")  # a command channel: the reply is run
    elif "interp_http" in feats and "interp_exec" in feats and "chmod" in low and _EXEC_MODE.search(code):
        feats.add("interp_download_exec")  # fetched, made executable and spawned
    return feats


# Fileless execution: an anonymous memory file (memfd_create, or its syscall number on
# x86_64/i386/arm64) run through its fd path, or any fd run by fexecve/execveat.
_MEMFD = re.compile(r"memfd_create|\bsyscall\s*\(\s*(?:319|356|279|0x13f)\b|SYS_memfd_create", _P)
_FD_PATH = (r"(?:/proc/(?:self|thread-self|\$\$|\$\{?\w+\}?|\{[^}\n]{0,40}\}|%[ds]|\d+)/fd/"
            r"|/dev/fd/(?:\{|%|\$|\d)|['\"]/proc/self/fd['\"]\s*,|['\"]/dev/fd['\"]\s*,)")
_RUNNER = r"(?:\bexec\w*|\bspawn\w*|\bPopen|\brun|\bcall|\bsystem|\bcheck_output)\s*[({]?\s*"
# an exec of the fd's path (in the call, or a name bound to it), or fexecve/execveat
_FD_EXEC = re.compile(rf"fexecve|execveat|{_RUNNER}[^;\n]{{0,160}}?{_FD_PATH}", _P)
_FD_NAME = re.compile(rf"\$?(\w+)\s*=\s*[^;\n]{{0,120}}?{_FD_PATH}", _P)
_AT_EMPTY_PATH = re.compile(r"execveat[^\n]{0,200}(?:AT_EMPTY_PATH|0x1000|4096)", _P)
# Entering or making namespaces, mapping ids, mounting through libc: from inside the
# sandbox only an escape needs them (unshare(2)=272, setns(2)=308, mount(2)=165 on x86_64).
_NAMESPACE = re.compile(r"\b(?:unshare|setns)\s*\(|CLONE_NEW(?:USER|NS|PID|NET|UTS|IPC|CGROUP)\b|"
                        r"/proc/(?:1|\d+|\$\w+|\{[^}\n]{0,40}\}|%[ds]|['\"]\s*\+[^\n]{0,40}\+\s*['\"])/ns/|"
                        r"/proc/(?:self|\d+|\$\$)/[ug]id_map|\bsyscall\s*\(\s*(?:272|308|165)\b", _P)
_LIBC_MOUNT = re.compile(r"\b(?:ctypes|CDLL|libc|Fiddle|ffi)\b[\s\S]{0,4000}\.mount\s*\(\s*b?['\"]", _P)
# A file's times set from a stat of a system file: a planted file made to look as old
# as the system's own programs (os.utime(p, (s.st_atime, s.st_mtime)) after
# s = os.stat('/usr/bin/git'); perl utime((stat "/bin/ls")[8,9], $f); fs.utimesSync).
_UTIME = re.compile(r"\butimes?(?:Sync)?\s*\(|\bFile\.utime\b|\btouch\s*\(", _P)
_SYSTEM_STAT = re.compile(r"\b(?:l?stat|statSync|lstatSync|getmtime|getatime|File\.(?:mtime|atime|stat))\s*\(?\s*"
                          r"['\"](?:/usr|/bin|/sbin|/etc|/lib|/lib64|/boot|/opt)/[^'\"\n]*['\"]", _P)
# chmod with a mode whose owner may execute (0o755, 0755, '755', +x, S_IXUSR)
_EXEC_MODE = re.compile(r"chmod\w*\s*\(?[^;\n]{0,200}?(?:(?<![\w.])(?:0o?)?[0-7]?[1357][0-7]{2}\b|['\"][ugoa]*\+[rw]*x|"
                        r"S_IX(?:USR|GRP|OTH))", _P)


# A shell/REPL history file named in code (after folding: '.bash_' + 'history')...
_HISTORY_NAME = re.compile(r"""['"`][^'"`\n]{0,200}(?:_history|/\.history|\.lesshst)['"`]""")
# ...emptied, overwritten or deleted on the same line (open for writing, truncate,
# writeFileSync/File.write/write_text, unlink/remove): the trail erased
_WIPE = re.compile(r"\btruncate\w*\s*\(|\bopen\s*\([^\n]{0,300}?,\s*['\"](?:w|wb|w\+|>|\+>)['\"]|"
                   r"\bopen\s*\(?\s*(?:my\s+)?[$*]?\w+\s*,\s*['\"]\+?>(?!>)|writeFileSync|\bFile\.write\b|"
                   r"\.write_(?:text|bytes)\(|\bunlink\w*\s*\(|\bos\.remove\(|\brmSync\b|"
                   r"file_put_contents|\bio\.open\([^\n]{0,300}['\"]w|\bFile\.(?:delete|truncate)\b", _P)


def _wipes_history(code: str) -> bool:
    """A history file emptied or deleted by code: the name and the wipe in one statement
    (a line, up to a ``;``), so reading history and writing a report is not a wipe."""
    for m in _HISTORY_NAME.finditer(code[:_MAX_SCAN]):
        start = max(code.rfind("\n", 0, m.start()), code.rfind(";", 0, m.start())) + 1
        ends = [e for e in (code.find("\n", m.end()), code.find(";", m.end())) if e >= 0]
        line = code[start:min(ends) if ends else len(code)]
        if "write_history_file" not in line and _WIPE.search(line):
            return True
    return False


def _memfd_exec(code: str, low: str) -> bool:
    """A memory file's descriptor run as a program: its /proc/self/fd path handed to an
    exec (in the call or through a name bound to it), python's os.execve(fd, ...)
    (fexecve), or execveat with AT_EMPTY_PATH on any descriptor."""
    if ("memfd" in low or "syscall" in low) and _MEMFD.search(code):
        if _FD_EXEC.search(code):
            return True
        names = _FD_NAME.findall(code[:_MAX_SCAN])[:8]
        if any(re.search(rf"{_RUNNER}\$?{re.escape(n)}\b", code) for n in names):
            return True
        fds = re.findall(r"(\w+)\s*=\s*[\w.]*memfd_create", code)[:8]
        if any(re.search(rf"\bexecve\s*\(\s*{re.escape(n)}\s*,", code) for n in fds):
            return True
    return "execveat" in low and _AT_EMPTY_PATH.search(code) is not None


def _escape_features(code: str, low: str, feats: set[str]) -> None:
    """Fileless execution (interp_memfd_exec), namespace entry or creation and libc
    mounts (interp_namespace), file times forged from a system file's
    (interp_timestomp) and history files wiped (interp_history_wipe): capabilities
    judged whatever the code's language."""
    if _memfd_exec(code, low):
        feats.add("interp_memfd_exec")
    ns_gate = any(g in low for g in ("share", "setns", "clone_new", "/ns/", "_map", "syscall"))
    if (ns_gate and _NAMESPACE.search(code)) or ("mount" in low and _LIBC_MOUNT.search(code)):
        feats.add("interp_namespace")
    if ("utime" in low or "touch" in low) and _UTIME.search(code) and _SYSTEM_STAT.search(code):
        feats.add("interp_timestomp")
    if ("histor" in low or "lesshst" in low) and _wipes_history(fold_strings(code)):
        feats.add("interp_history_wipe")


# Tcl (tclsh, wish, expect): what its commands can do, in its own syntax
_TCL_CODE = re.compile(r"\[\s*(?:open|socket|exec|http::geturl|::http::geturl|eval|uplevel|string\s+reverse|"
                       r"binary\s+decode)\b|^\s*(?:package\s+require\s+\w|set\s+\w+\s+\[|proc\s+\w+\s+\{|"
                       r"(?:exec|eval|uplevel)\s)", re.MULTILINE)
_TCL_FEATURES: list[tuple[str, re.Pattern[str]]] = [
    ("interp_file_read", re.compile(r"\[\s*open\s+(?![^\]\n]*\s[wa]\+?\s*\])|^\s*open\s+\S", re.M)),
    ("interp_http", re.compile(r"(?:::)?http::geturl\b")),
    ("interp_upload", re.compile(r"(?:::)?http::geturl\b[^\n]*\s-(?:query|querychannel)\s|"
                                 r"\bputs\s+(?:-nonewline\s+)?\$\w+\s+\S|\bfcopy\s|\bchan\s+copy\s")),
    ("interp_exec", re.compile(r"(?:^|[\[;{])\s*(?:exec|open\s+\|)\s", re.M)),
    ("interp_eval", re.compile(r"(?:^|[\[;{])\s*(?:eval|uplevel(?:\s+#?\d+)?|interp\s+eval\s+\S+)\s+[\[$]", re.M)),
    ("interp_bind", re.compile(r"\bsocket\s+-server\b")),
]


def _tcl_features(code: str, feats: set[str]) -> None:
    """Capabilities of Tcl code (``[open path]``, ``http::geturl URL -query data``,
    ``exec``, ``eval [...]``, ``socket -server``), and a name computed so no literal
    shows it (string reverse, binary decode, format %c) in code that also talks to the
    network: concealment is evidence beside the network use, never alone."""
    folded = fold_tcl(code) or code
    for name, rx in _TCL_FEATURES:
        if rx.search(folded):
            feats.add(name)
    if feats & {"interp_http", "interp_socket"} and tcl_computed_name(code):
        feats.add("interp_computed_name")
    if "interp_http" in feats and "interp_eval" in feats:
        feats.add("interp_download_exec")


_MAX_SCAN = 65536
# A variable that holds what came back from the network...
_NET_VALUE = re.compile(
    r"^[ \t]*(?:(?:my|let|const|var)\s+)?\$?(\w+)\s*=[^=\n][^\n]*?(?:urlopen|requests\.(?:get|post)"
    r"|\.getresponse\(|\bfetch\(|\.recv\(|LWP::Simple|\bget\(\s*['\"]https?:|Net::HTTP|"
    r"URI\.open|open-uri|http\.get|https\.get|curl_exec)", re.M)


def _runs_fetched_text(code: str) -> bool:
    """...handed to a shell or run as a command (``cmd = urlopen(u).read().decode();
    subprocess.run(cmd, shell=True)``): the server decides what runs."""
    for name in dict.fromkeys(_NET_VALUE.findall(code[:_MAX_SCAN])):
        if re.search(r"(?:os\.system|os\.popen|subprocess\.\w+|check_output|getoutput|Popen|"
                     r"execSync|spawnSync|\bsystem|\bexec|\bqx|shell_exec|passthru|IO\.popen)\s*"
                     r"\(?\s*\$?" + re.escape(name) + r"\b(?!\s*\()", code[:_MAX_SCAN]):
            return True
    return False


_STRING_CALL = re.compile(
    r"(?:system|popen|exec|spawn|shell_exec|passthru|call|check_output|check_call|run|"
    r"execsync|execute|getoutput|Popen|callCommand|readProcess|ProcessBuilder|Command|"
    r"Arguments\s*=)\s*\(?\s*(?:\[\s*)?(['\"])((?:(?!\1).){2,400})\1",
    re.IGNORECASE,
)


_SHELL_LITERAL = re.compile(r"(['\"])((?:(?!\1)[^\n]){0,300}(?:/dev/(?:tcp|udp)/|\s-e\s+/bin/|"
                            r"\bsh\s+-i\b|bash\s+-i\b)(?:(?!\1)[^\n]){0,300})\1")


# An argv list handed to a process runner: subprocess.run(['su', '-c', 'id', 'root']).
_ARGV_CALL = re.compile(r"\b(?:run|call|Popen|check_output|check_call|spawnSync|spawn|execFileSync|"
                        r"execFile|execvpe?|execve?|ProcessBuilder)\s*\(\s*(?:['\"][^'\"\n]*['\"]\s*,\s*)?"
                        r"\[\s*((?:'[^'\\\n]*'|\"[^\"\\\n]*\")(?:\s*,\s*(?:'[^'\\\n]*'|\"[^\"\\\n]*\"))*)\s*,?\s*\]")


def embedded_commands(code: str) -> list[str]:
    """String literals the code hands to a shell (``os.system("...")`` and friends), argv
    lists it hands to a process runner (joined as the command line they are), and
    literals that are shell commands wiring a shell to a socket wherever they appear
    (``new ProcessBuilder("bash", "-c", "bash -i >& /dev/tcp/...")``)."""
    out = [m.group(2) for m in _STRING_CALL.finditer(code)]
    for m in _ARGV_CALL.finditer(code):
        words = [w[1:-1] for w in re.findall(r"'[^'\\\n]*'|\"[^\"\\\n]*\"", m.group(1))]
        if len(words) > 1:
            line = " ".join(shlex.quote(w) for w in words)
            if line not in out:
                out.append(line)
    out += [m.group(2) for m in _SHELL_LITERAL.finditer(code) if m.group(2) not in out]
    return out


_LIT = r"(?:'[^'\\\n]*'|\"[^\"\\\n]*\")"
# Two literals joined: + (python, js, ruby, java), . (perl, php), .. (lua), nothing
# (python's implicit concatenation, awk's juxtaposition).
_JOINED = re.compile(rf"({_LIT})[ \t]*(?:\+|\.\.|\.|)[ \t]*({_LIT})")
_HEX_CALL = re.compile(r"(?:\b(?:bytes|bytearray)\.fromhex|\bbinascii\.(?:unhexlify|a2b_hex)|\bunhexlify)"
                       r"\(\s*(['\"])([0-9a-fA-F\s]{2,4096})\1\s*\)"
                       r"|\bpack\s*\(?\s*(['\"])H\*\3\s*,\s*(['\"])([0-9a-fA-F]{2,4096})\4\s*\)?"
                       r"|\bBuffer\.from\(\s*(['\"])([0-9a-fA-F]{2,4096})\6\s*,\s*['\"]hex['\"]\s*\)")
_REVERSED = re.compile(rf"({_LIT})\s*\[\s*::\s*-1\s*\]")
_CHR = re.compile(r"\b(?:chr|String\.fromCharCode)\(\s*(\d{1,3})\s*\)")
# A list of character codes mapped to characters: perl `map { chr } (98, 97)`, python
# `map(chr, [98, 97])`, `bytes([98, 97])`, js `String.fromCharCode(98, 97)`.
_CODES = r"((?:\d{1,3}\s*,\s*){1,4095}\d{1,3})"
_CHR_LIST = re.compile(rf"\bmap\s*\{{\s*chr(?:\s*\(\s*\$_\s*\))?\s*\}}\s*\(\s*{_CODES}\s*\)"
                       rf"|\bmap\(\s*chr\s*,\s*[\[(]\s*{_CODES}\s*[\])]\s*\)"
                       rf"|\bbytes\(\s*\[\s*{_CODES}\s*\]\s*\)|\bString\.fromCharCode\(\s*{_CODES}\s*\)")
# join with an empty separator of one literal: perl `join "", "x"`, python `''.join(['x'])`
_JOIN_ONE = re.compile(rf"\bjoin\s*\(\s*(['\"])\1\s*,\s*({_LIT})\s*\)|\bjoin\s+(['\"])\3\s*,\s*({_LIT})"
                       rf"|(['\"])\5\.join\(\s*\[?\s*({_LIT})\s*\]?\s*\)")


def _quoted(text: str) -> str | None:
    if "\n" in text or "\\" in text:
        return None
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    return None


def fold_strings(code: str) -> str:
    """Constant text in code spelled so that no literal shows it, folded to the literal a
    reader would write: ``'wg' + 'et'``, perl's ``"47" . "55"``, awk's ``"s" "h"``,
    ``bytes.fromhex('6375726c')``, perl ``pack("H*", "2f...")``, ``'us'[::-1]``,
    ``chr(47)``. Nothing is evaluated but these spellings of a string constant; the
    result is analysed beside the code as written (embedded commands, paths)."""
    if len(code) > 65536:
        return code
    # the shared step (analysis/constfold.py): python's constant expressions and
    # computed-name lookups, Tcl's constant command substitutions
    code = fold_python(code) or fold_tcl(code) or fold_perl(code) or code

    def lit(text: str, m: re.Match[str]) -> str:
        q = _quoted(text)
        return q if q is not None else m.group(0)

    def unhex(m: re.Match[str]) -> str:
        digits = "".join((m.group(2) or m.group(5) or m.group(7) or "").split())
        try:
            text = bytes.fromhex(digits).decode()
        except ValueError:
            return m.group(0)
        return lit(text, m) if text.isprintable() else m.group(0)

    out = _HEX_CALL.sub(unhex, code)
    out = _CHR.sub(lambda m: lit(chr(int(m.group(1))), m) if 32 <= int(m.group(1)) < 127 else m.group(0), out)

    def chars(m: re.Match[str]) -> str:
        codes = [int(c) for c in re.findall(r"\d+", next(g for g in m.groups() if g))]
        if not all(32 <= c < 127 or c in (9, 10) for c in codes):
            return m.group(0)
        return lit("".join(map(chr, codes)), m)
    out = _CHR_LIST.sub(chars, out)
    if "join" in out:
        out = _JOIN_ONE.sub(lambda m: m.group(2) or m.group(4) or m.group(6), out)
    out = _REVERSED.sub(lambda m: lit(m.group(1)[1:-1][::-1], m), out)
    for _ in range(256):
        new = _JOINED.sub(lambda m: lit(m.group(1)[1:-1] + m.group(2)[1:-1], m), out)
        if new == out:
            break
        out = new
    return out


_STR = r"(?:'[^'\\\n]*'|\"[^\"\\\n]*\")"
_JOIN_CALL = re.compile(rf"(os\.path\.join|posixpath\.join|\bpath\.join|\bpath\.resolve|\bFile\.join|"
                        rf"require\(\s*['\"]path['\"]\s*\)\.(?:join|resolve)|"
                        rf"\bfilepath\.Join|\b(?:pathlib\.)?(?:Pure|Posix)?Path)"
                        rf"\(\s*({_STR}(?:\s*,\s*{_STR})*)\s*,?\s*\)")


# A join from an absolute literal root with variables between literals
# (os.path.join('/proc', pid, 'environ')), and an f-string path from a root
# (f'/proc/{pid}/environ'): every path the variable may stand for, as a glob.
_JOIN_VARS = re.compile(rf"(?:os\.path\.join|posixpath\.join|\bpath\.join|\bFile\.join|\bfilepath\.Join)"
                        rf"\(\s*(['\"]/[^'\"\n]*['\"](?:\s*,\s*(?:{_STR}|[A-Za-z_][\w.]*(?:\[[^\]\n]*\])?))+)\s*,?\s*\)")
_FSTRING_PATH = re.compile(r"\bf(['\"])(/[^'\"\n{}]*(?:\{[^}\n]{1,80}\}[^'\"\n{}]*)*\{[^}\n]{1,80}\}/[^'\"\n{}]+)\1")
_HOME = re.compile(r"\b(?:pathlib\.)?Path\.home\(\s*\)|\bos\.path\.expanduser\(\s*['\"]~['\"]\s*\)")
# The home directory in other languages (node, ruby, go, perl, php): the literal '~'.
_HOME_EXPR = re.compile(r"(?:\bos|require\(\s*['\"]os['\"]\s*\))\.homedir\(\s*\)|\bprocess\.env\.HOME\b|\bENV\[\s*['\"]HOME['\"]\s*\]|"
                        r"\bos\.environ\[\s*['\"]HOME['\"]\s*\]|\bos\.(?:environ\.get|getenv)\(\s*['\"]HOME['\"]\s*\)|"
                        r"\bDir\.home\b|\bos\.UserHomeDir\(\s*\)|\$ENV\{HOME\}|getenv\(\s*['\"]HOME['\"]\s*\)")
_EXPANDUSER = re.compile(r"\bos\.path\.expanduser\(\s*('[^'\n]*'|\"[^\"\n]*\")\s*\)")
_PATH_DIV = re.compile(r"\b(?:pathlib\.)?Path\(\s*('[^'\n]*'|\"[^\"\n]*\")\s*\)\s*/\s*('[^'\n]*'|\"[^\"\n]*\")")


# A literal joined with plain names by + in a call's argument ('.' + n + '_history'):
# the name may stand for anything, so the text is a glob with * for each name.
_LIT_VAR_CONCAT = re.compile(rf"(?<=[(,])\s*{_STR}(?:\s*\+\s*(?:{_STR}|[A-Za-z_]\w*(?![\w.(\[])))+(?=\s*[,)])")


def _concat_glob(m: re.Match[str]) -> str:
    parts = re.findall(rf"{_STR}|[A-Za-z_]\w*", m.group(0))
    if all(p[:1] in "'\"" for p in parts):
        return m.group(0)
    text = "".join(p[1:-1] if p[:1] in "'\"" else "*" for p in parts)
    return m.group(0) if "'" in text else " " + repr(text)


def fold_path_constants(code: str) -> str:
    """Fold what a reader would fold in interpreter code: ``'sha' + 'dow'`` (or php's
    ``.``, lua's ``..``) is ``'shadow'``, ``Path('/', 'etc', 'shadow')`` and ``os.path.join('/etc', 'x')`` are
    one literal path. Only string literals are folded (no evaluation); the result keeps
    the call so the file-act scanner sees ``Path('/etc/shadow').read_bytes()``."""
    code = fold_python(code) or fold_tcl(code) or fold_perl(code) or code  # 'di_'[::-1], open [file join $env(HOME) [string reverse swa.] ...]
    if "HOME" in code or "home" in code:
        code = _HOME_EXPR.sub("'~'", code)
    if "+" in code:  # '.' + n + '_history', '/proc/' + pid + '/environ': any value of n
        code = _LIT_VAR_CONCAT.sub(_concat_glob, code)
    for _ in range(64):
        new = _JOINED.sub(lambda m: repr(m.group(1)[1:-1] + m.group(2)[1:-1]), code)
        if new == code:
            break
        code = new

    def join(m: re.Match[str]) -> str:
        parts = [p[1:-1] for p in re.findall(_STR, m.group(2))]
        joined = posixpath.join(*parts) if parts else ""
        return f"{m.group(1)}({joined!r})" if "Path" in m.group(1) else repr(joined)
    code = _JOIN_CALL.sub(join, code)
    if "join" in code or "Join" in code:
        def join_vars(m: re.Match[str]) -> str:
            words = re.findall(rf"{_STR}|[A-Za-z_][\w.]*(?:\[[^\]\n]*\])?", m.group(1))
            if not words or words[-1][:1] not in "'\"":
                return m.group(0)  # /etc/<name>: what the file is, the variable decides
            return repr(posixpath.join(*[w[1:-1] if w[:1] in "'\"" else "*" for w in words]))
        code = _JOIN_VARS.sub(join_vars, code)
    if "f'/" in code or 'f"/' in code:
        code = _FSTRING_PATH.sub(lambda m: repr(re.sub(r"\{[^}]*\}", "*", re.sub(
            r"\{\s*(?:os\.)?getpid\(\)\s*\}", "self", m.group(2)))), code)  # own pid: self
    if "home" in code or "expanduser" in code or "/" in code:
        # Path.home() / '.aws' / 'credentials', Path('~/x').expanduser(),
        # os.path.expanduser('~/.ssh/id_rsa'): the home-relative path (~ is the workspace)
        code = _EXPANDUSER.sub(lambda m: m.group(1), code)
        code = _HOME.sub("Path('~')", code)
        for _ in range(16):
            new = _PATH_DIV.sub(lambda m: f"Path({posixpath.join(m.group(1)[1:-1], m.group(2)[1:-1])!r})",
                                code)
            if new == code:
                break
            code = new
        code = re.sub(r"\(\s*(Path\('[^'\n]*'\))\s*\)", r"\1", code)
        code = _JOIN_CALL.sub(join, code)  # os.path.join(os.path.expanduser('~'), ...)
    propagated = _propagate_path_names(code)
    # h = os.getenv('HOME'); os.path.join(h, '.x'): joined once the name is its value
    return _JOIN_CALL.sub(join, propagated) if propagated != code else code


_ASSIGN_PATH = re.compile(r"(?:^|[;\n{(]|\b(?:my|const|let|var|local))\s*(\$?[A-Za-z_]\w*)\s*=\s*"
                          r"('[^'\\\n]*/[^'\\\n]*'|\"[^\"\\\n$]*/[^\"\\\n$]*\"|'~')\s*(?=[;\n)]|$)")


def _propagate_path_names(code: str) -> str:
    """A name bound once to a path literal and handed to a call stands for that path:
    ``p = '.git/hooks/post-merge'; open(p, 'w')`` opens the hook (the file-act scanners
    read literals only)."""
    if "=" not in code or len(code) > 65536:
        return code
    bound: dict[str, str] = {}
    for m in _ASSIGN_PATH.finditer(code):
        name = m.group(1)
        bound[name] = "" if name in bound else m.group(2)  # bound twice: unknown
    changed = False
    for name, value in bound.items():
        if value:
            new = re.sub(rf"(\(\s*){re.escape(name)}(?=\s*(?:[,)]|\+\s*['\"]))",
                         lambda m, v=value: m.group(1) + v, code)
            changed = changed or new != code
            code = new
    if changed:  # open(d + '/sync.service', 'w') -> open('~/.config/...' '/sync.service', 'w')
        for _ in range(16):
            new = _JOINED.sub(lambda m: repr(m.group(1)[1:-1] + m.group(2)[1:-1]), code)
            if new == code:
                break
            code = new
    return code
