"""The item text the cross-encoder reads beside a search query, built the same way for
training-data mining and for serving: title, categories, year and description."""
from __future__ import annotations

from typing import Mapping


def item_text(item: Mapping[str, object]) -> str:
  """Title. Categories. Year. Description (whatever the catalog row has)."""
  parts = [str(item.get("title") or ""), ", ".join(item.get("categories") or [])]
  if item.get("year"):
    parts.append(str(item["year"]))
  if item.get("description"):
    parts.append(str(item["description"]))
  return ". ".join(p for p in parts if p)

