"""How the process sensor names a process (``proc.name``), which rules match on."""

from __future__ import annotations

from bastion.sensors.procfs import process_name


def test_a_multicall_binary_is_named_by_its_applet() -> None:
    # busybox's own shell runs `wc -c` through /proc/self/exe (comm "exe"), or a path
    # to the binary itself (comm "busybox"): the program that runs is wc either way
    assert process_name("exe", "/bin/busybox", ["wc", "-c"]) == "wc"
    assert process_name("busybox", "/bin/busybox", ["wc", "-c"]) == "wc"
    assert process_name("busybox", "/bin/busybox", ["busybox", "nc", "-e", "/bin/sh"]) == "nc"
    assert process_name("nc", "/usr/bin/busybox", ["/usr/bin/nc", "-e", "sh"]) == "nc"
    assert process_name("busybox", "/bin/busybox", ["busybox", "--list"]) == "busybox"


def test_other_programs_keep_their_comm() -> None:
    assert process_name("python3", "/usr/bin/python3.11", ["python3", "-c", "1"]) == "python3"
    # exec -a renames argv[0] only: the kernel's comm names what was executed
    assert process_name("python3", "/usr/bin/python3.11", ["[kworker/0:1]"]) == "python3"
    assert process_name("", "/usr/bin/nc.openbsd", []) == "nc.openbsd"
    assert process_name("very-long-progr", "/w/very-long-program-name", ["x"]) == \
        "very-long-program-name"
