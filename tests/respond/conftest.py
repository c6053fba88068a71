"""The responder's tests need no root: verdicts in, commands out (``FakeWatched``), and
the response mechanisms on plain files. Carrying the commands out on real sessions is
tested in tests/session/test_actions.py."""
