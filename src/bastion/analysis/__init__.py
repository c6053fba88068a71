"""Command analysis: what a submitted shell command would run, decoded statically.

Public entry point::

    analyze_command(cmd: str) -> dict[str, Any]
    analyze_argv(argv: Sequence[str]) -> dict[str, Any]   (a call given as an argv list:
                                                         no shell parses it)

returns the ``cmd.*`` event fields (see ``bastion.events.FIELD_CATALOGUE``):

    cmd.raw          str        the command as submitted
    cmd.names        list[str]  every program name it may run, at any decoding level
    cmd.argv         list[str]  each simple command's argv joined with spaces (decoded);
                                wrapped commands appear both with and without the wrapper;
                                variable assignments appear as NAME=value
    cmd.text         str        the raw command, then all decoded text: argv, redirections,
                                payloads, code (one line each)
    cmd.redirects    list[str]  "OP TARGET" for every redirection (e.g. ">> ~/.bashrc")
    cmd.payloads     list[str]  text that became code: sh -c / eval strings, decoded
                                base64/hex, heredocs and pipes into a shell
    cmd.interp_code  list[str]  interpreter one-liner programs (python -c, perl -e, awk ...)
    cmd.features     list[str]  derived facts (see FEATURES)
    cmd.parse_error  bool       tree-sitter could not parse all of it
    cmd.depth        int        deepest decoding level reached (0 = as submitted)
    cmd.urls         list[str]  URLs and host:port strings in the decoded text
    cmd.sudo_names   list[str]  programs run directly under sudo/doas/pkexec/runuser
    cmd.exec_names   list[str]  cmd.names minus invocations that only print help, version,
                                completions or status (`nmap --help`, `frpc verify`)
    cmd.args         list[str]  every argument as "PROGRAM ARG" (one token; short option
                                clusters also split: "ssh -fNR" adds "ssh -R")
    cmd.subcommands  list[str]  "PROGRAM OP1" and "PROGRAM OP1 OP2" (first operands)
    cmd.paths        list[str]  path arguments and redirect sources/targets
    cmd.writes       list[str]  paths written (redirects, tee, cp/mv/install/ln, sed -i,
                                dd of=, touch, curl -o); cmd.deletes / cmd.modes likewise
    cmd.hosts        list[str]  hosts contacted (URL authorities, ssh/scp/nc destinations)
    cmd.persists     list[str]  persistence classes planted (content judged, see
                                analysis/persistence.py)

Text that is only printed, or written to a file that the command does not run, is not
code: interpreter features come from code that runs (inline, piped, or written and then
run in the same command).

It never raises for any input string; what it cannot parse is reported through
``cmd.parse_error`` and the ``parse_error`` feature.
"""

from __future__ import annotations

from .analyzer import MAX_DEPTH as MAX_DEPTH
from .analyzer import CallMemory as CallMemory
from .analyzer import analyze_argv as analyze_argv
from .analyzer import analyze_command as analyze_command

FEATURES = (
    # how text became code
    "shell_c", "shell_c_payload", "eval", "eval_payload", "stdin_to_shell", "pipe_to_shell",
    "pipe_to_interpreter", "download_to_shell", "decoded_to_shell", "find_exec",
    "command_substitution", "process_substitution", "heredoc", "herestring",
    "interp_shell_payload", "decoded_payload", "shell_runs_stream", "dynamic_code",
    # decoding and obfuscation
    "base64_decode", "base64_literal", "hex_decode", "reversed_text", "printf_escape",
    "echo_escape", "translated_text", "ansi_c_string", "ifs_obfuscation", "brace_obfuscation",
    "obfuscated_name", "variable_resolved",
    # shells and processes
    "devtcp", "interactive_shell", "privileged_shell", "sudo", "detached", "background",
    "proxy_wrapper",
    # interpreter code
    "interp_code", "interp_socket", "interp_bind", "interp_exec", "interp_shell",
    "interp_dup2", "interp_hash", "interp_loop", "interp_hash_loop", "interp_file_write",
    "interp_http", "interp_eval", "interp_base64", "interp_socket_exec", "interp_socket_dup",
    "interp_download_exec", "interp_python", "interp_perl", "interp_ruby", "interp_node",
    "interp_php", "interp_lua", "interp_awk", "interp_julia", "interp_r", "interp_tcl",
    "interp_java", "interp_js", "interp_powershell",
    # ssh / netcat semantics
    "ssh_forward_local", "ssh_forward_remote", "ssh_forward_dynamic", "ssh_tun",
    "ssh_stdio_forward", "ssh_jump", "ssh_proxy_command", "ssh_local_command",
    "ssh_gateway_ports", "ssh_no_command", "ssh_remote_command", "ssh_command", "autossh",
    "env_command", "nc_exec", "nc_listen", "nc_scan", "nc_connect",
    # code written out or typed into a program
    "code_text", "repl_input", "keystroke_shell_escape", "program_shell_escape",
    "sudo_shell_escape", "pipe_to_network", "pipe_to_remote_store", "pipe_to_mail",
    "file_to_network", "nc_exec_shell", "wallet_address", "exec_argv0", "remote_copy_push", "remote_copy_between_hosts",
    # written code and its fate
    "written_then_run", "written_script", "web_shell_code", "shellcode_literal",
    "git_inline_exec_config", "renamed_binary", "ssh_config_forward",
    "remote_proxy", "nc_relay", "test_outcome_hook", "test_runner_shadow", "test_config_override",
    "download_then_run", "raw_socket_to_file", "interp_file_read", "interp_upload",
    "remote_store_command", "cloud_upload", "serves_sensitive_root", "set_proc_name",
    "ptrace_code", "fork_bomb", "loopback_only", "interp_hash_spin",
    "history_disabled", "interp_setuid_root", "interp_setuid_mode", "secret_pushed", "monitor_signal", "interp_scan", "signal_all", "interp_relay",
    # attempts and enumeration (judged with the session context by the rules)
    "root_shell_request", "setid_enumeration", "dns_name_enumeration", "login_guessing",
    "socket_shell_program_written", "setuid_shell_program_written", "test_runner_patch",
    "secret_sender_program_written", "interp_secret_send", "interp_file_send", "relay_program_written",
    "hash_spin_program_written", "interp_stratum", "stratum_program_written", "shell_stratum",
    "coproc_remote_commands", "interp_memfd_exec", "interp_namespace", "interp_timestomp",
    "interp_history_wipe", "loader_exec",
    # network clients judged with their configuration (clientconf.py)
    "client_secret_request", "client_config_secret_written",
    # limits
    "parse_error", "depth_limit", "oversize", "too_deep", "parse_timeout", "analysis_timeout",
)

__all__ = ["FEATURES", "MAX_DEPTH", "CallMemory", "analyze_argv", "analyze_command"]
