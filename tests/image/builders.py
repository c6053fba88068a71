"""Build small real OCI images at test time, with umoci and skopeo, from the host's
own files: busybox-static for a shell, and for the SWE-style image the host's python3,
git and the test venv's pip and pytest. Nothing is downloaded."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sysconfig
import zipfile
from pathlib import Path

from bastion.image.sample import BUSYBOX, busybox_rootfs, docker_archive, oci_layout  # noqa: F401

_SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "pydoc_data",
                "ensurepip", "site-packages", "dist-packages",
                "config-3.11-x86_64-linux-gnu", "pydoc.py", "_pydecimal.py"}
SYSTEM_PYTHON = "/usr/bin/python3.11"  # Debian's; bastion's own may live under /root


def run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)


def _copy_with_libs(root: Path, binary: str, *, libs_only: bool = False) -> None:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    paths = ([] if libs_only else [binary]) + re.findall(r"(/\S+\.so[.\d]*)", out)
    for p in paths:
        real = os.path.realpath(p)
        for dest in {p, real}:
            target = root / dest.lstrip("/")
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, target)


def swe_rootfs(root: Path) -> Path:
    """busybox + python3 + git, a git repo at /testbed owned by root, a venv at
    /opt/venv with pip and pytest (copied from the test environment)."""
    busybox_rootfs(root)
    # /lib64 etc. are usrmerge symlinks on Debian: copy into /usr and link
    for d in ("lib", "lib64"):
        (root / "usr" / d).mkdir(parents=True, exist_ok=True)
        os.symlink(f"usr/{d}", root / d)
    python = SYSTEM_PYTHON
    _copy_with_libs(root, python)
    _copy_with_libs(root, "/usr/bin/git")
    stdlib = Path("/usr/lib") / os.path.basename(python)
    dest_std = root / "usr" / "lib" / stdlib.name
    shutil.copytree(stdlib, dest_std, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in _SKIP_STDLIB])
    for so in (stdlib / "lib-dynload").glob("*.so"):
        _copy_with_libs(root, str(so), libs_only=True)
    os.symlink(os.path.basename(python), root / "usr" / "bin" / "python3")
    # the venv: pip and pytest from our own environment
    venv = root / "opt" / "venv"
    site = venv / "lib" / stdlib.name / "site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    os.symlink("/usr/bin/python3", venv / "bin" / "python")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    ours = Path(sysconfig.get_paths()["purelib"])
    pytest_version = importlib.metadata.version("pytest")
    for entry in ours.iterdir():
        name = entry.name.lower()
        # pytest itself, not the plugins of our environment (pytest_xdist, pytest_timeout,
        # ...): a plugin's dist-info without its module breaks pytest's start in the image
        if name.startswith("pytest_") or (name.startswith("pytest-")
                                          and not name.startswith("pytest-" + pytest_version)):
            continue
        if name.startswith(("pip", "_pytest", "pytest", "pluggy", "iniconfig", "packaging", "pygments",
                            "py.py")):
            if entry.is_dir():
                shutil.copytree(entry, site / entry.name)  # with __pycache__: fast imports
            else:
                shutil.copy2(entry, site / entry.name)
    # the task repository
    testbed = root / "testbed"
    (testbed / "pkg").mkdir(parents=True)
    (testbed / "pkg" / "__init__.py").write_text("def add(a, b):\n    return a - b\n")
    (testbed / "tests").mkdir()
    (testbed / "tests" / "test_add.py").write_text(
        "from pkg import add\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root / "root"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                 ["git", "commit", "-qm", "task"]):
        subprocess.run(argv, cwd=testbed, env=env, check=True, capture_output=True)
    return root


def make_wheel(dest_dir: Path, name: str = "tinydep", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel, for `pip install --no-index <file>`."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record
    path = dest_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
    return path
