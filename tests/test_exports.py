"""The public surface is exactly what bastion/__init__.py re-exports, sorted."""

import bastion


def test_all_is_sorted_and_complete() -> None:
    assert bastion.__all__ == sorted(bastion.__all__)
    public = {n for n in dir(bastion) if not n.startswith("_") and n[0].isupper()}
    assert public == set(bastion.__all__)
