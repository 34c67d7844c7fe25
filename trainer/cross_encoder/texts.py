"""The texts the cross-encoder reads, built the same way for training-data mining and for serving.

Recommendations have no typed query: the "query" is a textual user context (recent liked
titles and the profile). Item text is title, categories, year and description.
"""
from __future__ import annotations

from typing import Mapping, Sequence

RECENT_TITLES = 5


def item_text(item: Mapping[str, object]) -> str:
  """Title. Categories. Year. Description (whatever the catalog row has)."""
  parts = [str(item.get("title") or ""), ", ".join(item.get("categories") or [])]
  if item.get("year"):
    parts.append(str(item["year"]))
  if item.get("description"):
    parts.append(str(item["description"]))
  return ". ".join(p for p in parts if p)


def user_context_text(profile: Mapping[str, object], recent_titles: Sequence[str]) -> str:
  """Recent liked titles (most recent first) and the profile; "a new user" when nothing known."""
  parts = []
  if recent_titles:
    parts.append("recently liked: " + "; ".join(recent_titles[:RECENT_TITLES]))
  described = [str(profile[k]) for k in ("age", "gender", "occupation") if profile.get(k)]
  if described:
    parts.append("user: " + ", ".join(described))
  return ". ".join(parts) or "a new user"
