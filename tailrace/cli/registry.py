"""Composing the plugin registry: each role's explicit list plus entry points.

The processors' and sinks' built-ins are listed by name and module, imported when a config
names one; the agent's one input (tail) is imported with the agent anyway.

Only the CLI layer calls this (the core never imports a role package on its own).
"""

from __future__ import annotations

from ..plugins import Registry

__all__ = ["build_registry"]


def build_registry(*, entry_points: bool = True) -> Registry:
    from edge_agent.plugins import INPUTS
    from processors.plugins import CONFIG_CHECKS, FILTERS, PARSERS
    from sinks.plugins import OUTPUTS

    reg = Registry()
    reg.add("inputs", INPUTS)
    # By name: a plugin's module is imported when a config names it (PluginTable).
    reg.add_builtin("filters", FILTERS)
    reg.add_builtin("parsers", PARSERS)
    reg.add_builtin("outputs", OUTPUTS)
    reg.checks.extend(CONFIG_CHECKS)
    if entry_points:
        reg.load_entry_points()
    return reg
