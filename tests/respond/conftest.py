"""The responder tests use the sensor tests' fixtures: a host with real sensors and
sessions wired to a real engine and responder."""

from tests.sensors.conftest import gpu, monitored, sensors  # noqa: F401
