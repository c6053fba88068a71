"""The two values that flow through bastion's pipeline: ``Event`` and ``Verdict``.

Sensors produce Events, the engine turns Events into Verdicts, the responder acts on
Verdicts, and the audit trail records both. Keeping exactly one type for each stage
boundary is what lets a rule written for a process event also see a connection event,
and what lets the audit trail, reports and RL adapters consume every stage alike.

An Event carries its *attribution* (run, episode, step, call, session, pid, ancestry)
as first-class attributes and its kind-specific facts in ``fields``, a flat mapping
keyed by dotted names (``proc.name``, ``net.dst_ip``). Flat dotted keys keep field
lookup in compiled rules to one dict access and make the field catalogue (below)
the single place that documents what rules may match on.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "ATTRIBUTE_FIELDS",
    "FIELD_CATALOGUE",
    "Action",
    "Event",
    "EventKind",
    "Severity",
    "Verdict",
    "new_id",
]


class EventKind(str, enum.Enum):
    """Every kind of thing bastion can observe. Rules are indexed by kind."""

    COMMAND = "command"  # a tool call's command, parsed before it runs
    EXEC = "exec"  # a process replaced its image (execve)
    FORK = "fork"  # a process was created
    EXIT = "exit"  # a process ended
    NET_CONNECT = "net.connect"  # an outbound connection was classified and decided
    NET_FLOW = "net.flow"  # periodic report on a long-lived connection
    NET_CLOSE = "net.close"  # a connection ended
    NET_DROP = "net.drop"  # a packet was dropped by the session's firewall
    DNS_QUERY = "dns.query"  # a DNS question and the resolver's answer
    FILE_WRITE = "file.write"  # a watched path was created, written, renamed or deleted
    FILE_DIFF = "file.diff"  # end-of-episode difference in a watched location
    FILE_READ = "file.read"  # a credential store in the workspace (HOME) was opened
    RESOURCE = "resource.sample"  # periodic CPU / memory / pids / GPU sample
    LIFECYCLE = "lifecycle"  # session created, call started/finished, frozen, closed
    ACTION = "action"  # the responder did something (kill, cut, freeze, ...)
    TELEMETRY = "telemetry"  # a sensor lost events, fell back, or fell behind


class Severity(enum.IntEnum):
    """Ordered so that policies can say "at least high"."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {value!r}; expected one of {names}") from None

    def __str__(self) -> str:
        return self.name.lower()


class Action(str, enum.Enum):
    """What the responder does about a verdict, from mildest to most drastic."""

    NONE = "none"  # record only
    ALERT = "alert"  # record and notify (webhook)
    DENY = "deny"  # refuse a command before it runs / refuse a connection
    CUT = "cut"  # close a live connection
    KILL = "kill"  # kill the offending process tree
    FREEZE = "freeze"  # freeze every process of the session (cgroup freezer)
    TERMINATE = "terminate"  # end the episode: kill everything, refuse further calls
    QUARANTINE = "quarantine"  # freeze, keep workspace + process list, end the episode

    def __str__(self) -> str:
        return self.value


_counter = itertools.count(1)
_prefix = f"{os.getpid():x}"


def new_id(prefix: str) -> str:
    """A process-unique, sortable identifier (cheap enough for every event)."""
    return f"{prefix}-{_prefix}-{next(_counter):x}"


@dataclass(frozen=True, slots=True)
class Event:
    """One observation. Immutable: stages add information by creating a new Event.

    ``ts`` is ``time.monotonic_ns()`` at observation, used for ordering and latency;
    ``wall`` is the wall clock, used for humans and for joining with outside logs.
    """

    kind: EventKind
    session_id: str = ""
    run_id: str = ""
    episode_id: str = ""
    step: int | None = None
    call_id: str | None = None
    pid: int | None = None
    ppid: int | None = None
    ancestry: tuple[int, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)
    ts: int = field(default_factory=time.monotonic_ns)
    wall: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: new_id("ev"))

    def get(self, name: str, default: Any = None) -> Any:
        """Look a field up by its dotted name; attribution names work too."""
        value = self.fields.get(name, _MISSING)
        if value is not _MISSING:
            return value
        attr = ATTRIBUTE_FIELDS.get(name)
        if attr is not None:
            return getattr(self, attr)
        return default

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "session_id": self.session_id,
            "run_id": self.run_id,
            "episode_id": self.episode_id,
            "step": self.step,
            "call_id": self.call_id,
            "pid": self.pid,
            "ppid": self.ppid,
            "ancestry": list(self.ancestry),
            "ts": self.ts,
            "wall": self.wall,
            "fields": _jsonable(self.fields),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(
            kind=EventKind(data["kind"]),
            session_id=data.get("session_id", ""),
            run_id=data.get("run_id", ""),
            episode_id=data.get("episode_id", ""),
            step=data.get("step"),
            call_id=data.get("call_id"),
            pid=data.get("pid"),
            ppid=data.get("ppid"),
            ancestry=tuple(data.get("ancestry", ())),
            fields=dict(data.get("fields", {})),
            ts=data.get("ts", 0),
            wall=data.get("wall", 0.0),
            id=data.get("id") or new_id("ev"),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The engine's judgement on one or more events, and what was done about it."""

    rule_id: str
    severity: Severity
    message: str
    action: Action = Action.NONE
    categories: tuple[str, ...] = ()
    mitre: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    policy_hash: str = ""
    session_id: str = ""
    run_id: str = ""
    episode_id: str = ""
    step: int | None = None
    call_id: str | None = None
    pid: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    ts: int = field(default_factory=time.monotonic_ns)
    wall: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: new_id("vd"))

    def with_action(self, action: Action) -> Verdict:
        return replace(self, action=action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule_id": self.rule_id,
            "severity": str(self.severity),
            "message": self.message,
            "action": self.action.value,
            "categories": list(self.categories),
            "mitre": list(self.mitre),
            "event_ids": list(self.event_ids),
            "policy_hash": self.policy_hash,
            "session_id": self.session_id,
            "run_id": self.run_id,
            "episode_id": self.episode_id,
            "step": self.step,
            "call_id": self.call_id,
            "pid": self.pid,
            "evidence": _jsonable(self.evidence),
            "ts": self.ts,
            "wall": self.wall,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(
            rule_id=data["rule_id"],
            severity=Severity.parse(data["severity"]),
            message=data.get("message", ""),
            action=Action(data.get("action", "none")),
            categories=tuple(data.get("categories", ())),
            mitre=tuple(data.get("mitre", ())),
            event_ids=tuple(data.get("event_ids", ())),
            policy_hash=data.get("policy_hash", ""),
            session_id=data.get("session_id", ""),
            run_id=data.get("run_id", ""),
            episode_id=data.get("episode_id", ""),
            step=data.get("step"),
            call_id=data.get("call_id"),
            pid=data.get("pid"),
            evidence=dict(data.get("evidence", {})),
            ts=data.get("ts", 0),
            wall=data.get("wall", 0.0),
            id=data.get("id") or new_id("vd"),
        )


_MISSING = object()

# Attribution attributes that rules may name like any other field (the rule compiler
# and the field catalogue use this one list): field name -> Event attribute.
ATTRIBUTE_FIELDS: Mapping[str, str] = {
    "kind": "kind",
    "session.id": "session_id",
    "run.id": "run_id",
    "episode.id": "episode_id",
    "call.step": "step",
    "call.id": "call_id",
    "proc.pid": "pid",
    "proc.ppid": "ppid",
    "proc.ancestry": "ancestry",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


# The field catalogue: every field a rule may reference, with its type and the event
# kinds that carry it. The rule compiler rejects names that are not listed here, so a
# typo in a rule pack is a load error with a position, not a rule that never fires.
# Types: str, int, float, bool, list (of str), ip (str holding an address).
FIELD_CATALOGUE: dict[str, tuple[str, str]] = {
    # attribution (every kind)
    "kind": ("str", "event kind"),
    "session.id": ("str", "session identifier"),
    "run.id": ("str", "RL run identifier"),
    "episode.id": ("str", "episode identifier"),
    "call.step": ("int", "agent step that caused the event"),
    "call.id": ("str", "tool call that caused the event"),
    "proc.pid": ("int", "process id (host namespace)"),
    "proc.ppid": ("int", "parent process id (host namespace)"),
    "proc.ancestry": ("list", "ancestor pids, parent first"),
    # process events (exec, fork, exit) and anything attributed to a process
    "proc.name": ("str", "process name (basename of exe, or comm)"),
    "proc.exe": ("str", "executable path"),
    "proc.args": ("list", "argv"),
    "proc.cmdline": ("str", "argv joined with spaces"),
    "proc.cwd": ("str", "working directory"),
    "proc.uid": ("int", "real uid (host)"),
    "proc.comm": ("str", "kernel comm (15 chars, settable by the process)"),
    "proc.pname": ("str", "parent process name"),
    "proc.pcmdline": ("str", "parent command line"),
    "proc.anames": ("list", "names of ancestors, parent first"),
    "proc.exit_code": ("int", "exit status (exit events)"),
    "proc.partial": ("bool", "true when neither the exec listener nor /proc gave the argv"),
    "proc.argv_source": ("str", "where proc.args came from: exec (the exec listener, as "
                         "exec'd), procfs (/proc after the exec), none"),
    "proc.args_now": ("list", "argv /proc shows when the process changed it after exec"),
    "proc.shadows": ("list", "module@directory of each test-framework module (pytest, "
                     "_pytest, pluggy, unittest) a Python process imports from the agent's "
                     "files ahead of the installed one (sensors/pyshadow.py)"),
    "proc.copy_of": ("str", "the system program (shell, interpreter, network client...) "
                     "whose bytes the executable has, when it runs from outside the "
                     "system directories"),
    "proc.renamed": ("bool", "the executable is such a copy under another program's name "
                     "(proc.name is then the real program's)"),
    "proc.trusted": ("bool", "the program run is a file the harness declared "
                     "(Session.trust_executable), at that path, with that content"),
    "proc.source": ("str", "how the process event was observed: netlink or poll"),
    "proc.tid": ("int", "thread id when it differs from the pid"),
    "proc.exit_signal": ("int", "signal that ended the process (exit events), 0 if none"),
    "proc.state": ("str", "scheduler state at the sample: R runnable, S, D, Z, T"),
    # command events (static analysis of a submitted command)
    "cmd.raw": ("str", "the command as submitted"),
    "cmd.names": ("list", "every program name the command may run, decoded"),
    "cmd.argv": ("list", "every argv, each joined with spaces, decoded"),
    "cmd.text": ("str", "all decoded text: argv, redirections, payloads"),
    "cmd.redirects": ("list", "redirection targets"),
    "cmd.payloads": ("list", "decoded payloads (base64/hex/eval/sh -c)"),
    "cmd.interp_code": ("list", "interpreter one-liner code (python -c, perl -e, ...)"),
    "cmd.features": ("list", "derived features (pipe_to_shell, devtcp, socket_code, ...)"),
    "cmd.parse_error": ("bool", "true when the command could not be parsed"),
    "cmd.depth": ("int", "deepest decoding level reached"),
    "cmd.urls": ("list", "URLs and host:port targets found in the decoded command"),
    "cmd.sudo_names": ("list", "program names run directly under sudo/doas/pkexec (decoded)"),
    "cmd.exec_names": ("list", "cmd.names minus bare help/version/completion/status calls"),
    "cmd.args": ("list", "every argument as 'PROGRAM ARG', one token each (decoded); "
                 "short option clusters also split: 'ssh -fNR' adds 'ssh -R'"),
    "cmd.run_args": ("list", "cmd.args of programs that act (not of text tools such as "
                     "echo, grep, cat, sed, whose arguments are data)"),
    "cmd.subcommands": ("list", "'PROGRAM OP1' and 'PROGRAM OP1 OP2' from the first operands"),
    "cmd.paths": ("list", "path arguments and redirection sources/targets (./ for relative)"),
    "cmd.reads": ("list", "paths given to programs that read files (cat, cp, tar, grep, "
                  "curl -d @f...) and < redirections"),
    "cmd.writes": ("list", "paths the command writes: redirections, tee, cp/mv/install/ln "
                   "targets, sed -i, dd of=, touch, curl -o"),
    "cmd.deletes": ("list", "paths the command deletes (rm, unlink, shred, mv sources)"),
    "cmd.modes": ("list", "paths whose mode, owner or attributes the command changes"),
    "cmd.hosts": ("list", "hosts the command contacts (URLs, ssh/scp/nc destinations)"),
    "cmd.persists": ("list", "persistence classes planted: a location that runs things "
                     "written with content that runs code (cron, shell_rc, git_config, ...)"),
    "cmd.via": ("str", "exec when the command is inline code a running process of the "
                "call handed to a shell or interpreter (sh -c, python -c); absent for the "
                "typed command"),
    # network events
    "net.dst_ip": ("ip", "destination address as dialled by the sandbox"),
    "net.dst_port": ("int", "destination port"),
    "net.src_ip": ("ip", "source address (session side)"),
    "net.src_port": ("int", "source port"),
    "net.proto": ("str", "transport: tcp, udp, icmp, ..."),
    "net.app": ("str", "application protocol: tls, http, ssh, stratum, socks, unknown"),
    "net.sni": ("str", "TLS server name"),
    "net.alpn": ("list", "TLS ALPN protocols"),
    "net.host": ("str", "HTTP Host header"),
    "net.method": ("str", "HTTP method"),
    "net.path": ("str", "HTTP path"),
    "net.ssh_banner": ("str", "SSH client banner"),
    "net.stratum_method": ("str", "miner JSON-RPC method"),
    "net.decision": ("str", "gateway decision: allow or deny"),
    "net.rule": ("str", "the allow-list entry or deny reason that decided"),
    "net.bytes_out": ("int", "bytes sent by the sandbox"),
    "net.bytes_in": ("int", "bytes received by the sandbox"),
    "net.duration": ("float", "seconds the connection has been open"),
    "net.conn_id": ("str", "gateway connection id"),
    "net.reason": ("str", "why the gateway decided as it did, one line for humans"),
    "net.cut": ("str", "why the gateway cut a live connection (e.g. a phase switch)"),
    "net.packets": ("int", "packets dropped by the session firewall since the last report"),
    "net.error": ("str", "malformed first bytes, or why the upstream could not be reached"),
    "net.dialled": ("str", "the name the gateway dialled itself (TLS SNI / HTTP Host)"),
    "net.upstream": ("str", "where allowed traffic went: host, or lab:<name>"),
    "net.tls_inspect": ("bool", "TLS terminated and its plaintext inspected "
                        + "(network.tls_inspect); byte counts are the plaintext's"),
    "net.secret_source": ("str", "the workspace credential store whose secret was in the bytes "
                          + "the sandbox sent (gateway/leaks.py)"),
    "net.secret_encoding": ("str", "how that secret was spelled: raw, reversed, hex, base64, ..."),
    "net.shape": ("str", "traffic shape of a connection: ssh, stratum, interactive"),
    "net.shape_small_out": ("int", "small (< 256 B) bursts the sandbox sent on the connection"),
    "net.shape_small_in": ("int", "small (< 256 B) bursts the server sent on the connection"),
    "net.shape_turns": ("int", "times the direction of traffic changed on the connection"),
    "net.shape_server_first": ("int", "server bursts after client silence (server-initiated)"),
    "net.shape_periodic": ("float", "coefficient of variation of gaps between exchanges"),
    "net.shape_acked": ("int", "consecutive small requests each answered by a tiny ack (a miner)"),
    # DNS
    "dns.name": ("str", "queried name"),
    "dns.type": ("str", "query type"),
    "dns.answer": ("list", "answers returned"),
    "dns.decision": ("str", "allow or deny"),
    "dns.tunnel_score": ("float", "0..1, how much the query looks like DNS tunnelling"),
    "dns.rcode": ("str", "the resolver's answer: NOERROR, NODATA, NXDOMAIN, SERVFAIL, FORMERR"),
    "dns.rule": ("str", "what decided the query: dns.allowlist, dns.not_allowed, gateway.dns_*"),
    "dns.parent": ("str", "the parent domain the query's new label bytes are charged to"),
    "dns.volume": ("int", "bytes of new label text under dns.parent in the last minute"),
    "dns.held": ("bool", "the query looked suspicious and was judged before it left"),
    "dns.secret_source": ("str", "the workspace credential store whose secret the name carried "
                          + "(refused: it never left)"),
    "dns.secret_encoding": ("str", "how that secret was spelled in the name: hex, base32, ..."),
    # files
    "file.path": ("str", "path as seen inside the sandbox"),
    "file.op": ("str", "create, write, delete, rename, chmod"),
    "file.location": ("str", "which watched class: protected, persistence, ..."),
    "file.class": ("str", "persistence class: cron, shell_rc, ssh, systemd_user, ..."),
    "file.size": ("int", "size in bytes after the change (-1 when deleted)"),
    "file.sha256": ("str", "content hash after the change (empty when deleted/large)"),
    "file.attribution": ("str", "how the call was chosen: writer (the writing process's "
                         "call), latest_call (writer unknown), call_end (seen when that "
                         "call ended), outside (not the agent) or none"),
    "file.runs_code": ("bool", "a persistence location now holds content that runs code "
                       "later (judged by bastion.analysis.persistence)"),
    "file.mode": ("str", "permission bits after the change, octal (setuid/setgid sweep)"),
    "file.reader": ("str", "executable of the process that opened a credential store"),
    "file.reader_role": ("str", "what that program is to the store: consumer (its own "
                         "program), bulk (reads whole trees: git, tar, grep), program, unknown"),
    "file.store_kinds": ("int", "kinds of credential store the call's programs (not consumers "
                         "nor bulk readers) opened so far, this one included"),
    "file.store_owned": ("bool", "a store only its own application reads (browser profiles, "
                         "gnupg, pass, wallets)"),
    "file.content": ("str", "text a write_file call writes, when small text (command events)"),
    # resources
    "res.cpu_cores": ("float", "CPU use in cores over the last interval"),
    "res.mem_bytes": ("int", "memory in use"),
    "res.pids": ("int", "number of tasks"),
    "res.gpu_util": ("float", "GPU utilisation percent of the process"),
    "res.gpu_mem_bytes": ("int", "GPU memory used by the process"),
    "res.burn_seconds": ("float", "seconds a process has burned >= the CPU threshold"),
    "res.cpu_demand": ("float", "cores the process ran or waited to run (schedstat)"),
    "res.scope": ("str", "what a resource sample covers: session, call or process"),
    "res.cpu_seconds": ("float", "core-seconds of CPU a call used in the interval"),
    "res.bg_cpu_seconds": ("float", "of those, used by processes that outlived or detached "
                           "from the call"),
    "res.limit": ("str", "a limit the session hit since the last sample: pids or memory"),
    "res.limit_hits": ("int", "forks refused / processes OOM-killed at that limit"),
    "proc.background": ("bool", "the process outlived or detached from its call"),
    "call.returned": ("bool", "the call's first process has exited"),
    "res.interval": ("float", "seconds the resource sample covers"),
    # lifecycle, actions, telemetry
    "life.state": ("str", "created, call_start, call_end, frozen, thawed, closed, ..."),
    "action.name": ("str", "action the responder took"),
    "action.target": ("str", "what it acted on"),
    "action.rule": ("str", "rule that asked for the action"),
    "action.ok": ("bool", "whether the action succeeded"),
    "action.verdict": ("str", "id of the verdict the action answered"),
    "action.detail": ("str", "what exactly was done"),
    "telemetry.sensor": ("str", "sensor that lost events or fell back"),
    "telemetry.reason": ("str", "why"),
    "telemetry.loss": ("bool", "true when events were lost (sessions are frozen)"),
    "telemetry.gap": ("bool", "true when a sensor runs degraded and may miss events"),
    "telemetry.lag_ms": ("float", "how far behind the kernel the sensor was"),
}
