"""Rules + stateful detectors -> Verdicts (internal; ``Engine`` is the entry point).

Layering: ``finding`` (shapes) <- ``detectors`` (behaviour over time) <- ``engine``
(attribution, policy hash, severity -> action) <- ``build`` (from a Policy; import
``bastion.engine.build`` explicitly: it loads the rule packs).
"""

from __future__ import annotations

from .detectors import default_detectors as default_detectors
from .engine import Engine as Engine
from .engine import EngineStatistics as EngineStatistics
from .finding import Detector as Detector
from .finding import Finding as Finding

__all__ = ["Detector", "Engine", "EngineStatistics", "Finding", "default_detectors"]
