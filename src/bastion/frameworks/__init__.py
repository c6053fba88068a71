"""bastion inside agent frameworks that own the sandbox.

- ``bastion.frameworks.inspect``: an Inspect AI sandbox provider (``sandbox="bastion"``),
  registered through Inspect's ``inspect_ai`` entry point (extra ``bastion[inspect]``).
- ``bastion.frameworks.miniswe``: a mini-swe-agent environment (extra ``bastion[miniswe]``).
- ``bastion.frameworks.calls``: what both share: files in and out of a session and the
  exec semantics frameworks expect, all through ``Session.exec``.

The framework modules import their framework; nothing here is imported by ``bastion``
itself, so neither framework is a core dependency.
"""
