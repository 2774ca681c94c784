"""YAML from untrusted files (recipes, manifests, target files): safe types only, and no aliases.

``yaml.safe_load`` constructs no Python objects, but it expands aliases: a 400-byte file of
nested aliases ("billion laughs") grows into gigabytes. Recipes and manifests have no use
for aliases, so a file with one is refused as invalid YAML, naming where.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["load_yaml"]


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted here: write the value out", mark)
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """The data of a YAML document, safe types only; a YAMLError for any alias in it."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
