"""The check every trainer's settings share: a misspelt setting in a pipeline's config fails
before anything runs, naming the names it knows."""
from __future__ import annotations

from typing import Any, Collection, Dict, Mapping, Optional


def known_settings(config: Optional[Mapping[str, Any]], known: Collection[str], what: str
                   ) -> Dict[str, Any]:
  """`config` as a dict, or ValueError naming its unknown keys and the `known` ones."""
  values = dict(config or {})
  unknown = set(values) - set(known)
  if unknown:
    raise ValueError(f"{what}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
  return values
