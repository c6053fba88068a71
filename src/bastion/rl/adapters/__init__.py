"""Trainer adapters: small modules that plug ``BastionEnv`` into RL frameworks.

Each adapter imports its framework lazily (only when you ask for the framework's
class), so none of them is a dependency of bastion. One module per framework:

- ``roll``: GEM environment + ROLL ``GroupFilter`` (drop flagged groups)
- ``verl``: ``BaseTool`` for ``ToolAgentLoop`` + ``AgentLoopOutput`` masking
- ``trl``: ``environment_factory`` class, ``env_mask`` helper, stop callback
- ``openrlhf``: ``AgentInstance`` for ``--agent_func_path``
- ``skyrl``: ``BaseTextEnv`` + ``loss_masks`` helper

Versions whose interfaces were read: see each module's docstring.
"""

from __future__ import annotations

__all__: list[str] = []
