"""The lab package index's wheels are real: valid RECORDs, installable by pip offline."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

from bastion.redteam.pypi import build_index, repack_wheel


def test_repacked_wheel_has_a_valid_record(tmp_path: Path) -> None:
    whl = repack_wheel("iniconfig", tmp_path)
    assert whl.name.startswith("iniconfig-") and whl.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = list(csv.reader(io.StringIO(zf.read(record).decode())))
        assert {r[0] for r in rows} == names
        for path, digest, size in rows:
            if path == record:
                continue
            data = zf.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={expected.decode()}" and int(size) == len(data)


def test_index_serves_pep503_pages_pip_installs_from(tmp_path: Path) -> None:
    root = build_index(tmp_path / "idx", packages=("iniconfig",))
    page = (root / "simple" / "iniconfig" / "index.html").read_text()
    assert "iniconfig-" in page and "#sha256=" in page
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                    "--find-links", str(root / "files"), "--target", str(target),
                    "iniconfig"], check=True, capture_output=True)
    assert (target / "iniconfig" / "__init__.py").exists()
