"""A SYNTHETIC search log, generated from catalog metadata, for data without logged queries.

MovieLens has ratings but no searches. To train and evaluate the cross-encoder on search at all,
the miner turns some interactions into searches: a query written from the chosen item's metadata
(genre and decade, two genres, or a word of its title), whose relevance labels come from the
same metadata (every candidate matching the query is relevant). These labels are synthetic:
they measure whether the model reads metadata in text, not what real searchers want.
"""
from __future__ import annotations

import dataclasses
import re
from typing import List, Mapping, Optional, Tuple

import numpy as np

from transform.features import tokens

# Title words too common or too short to be a query on their own.
_STOPWORDS = frozenset(
    "the a an of and in on to for with from at by is it its this that la le les el de der die "
    "das du des il ii iii part".split())
_GENRE_DECADE = ("{genre} from the {decade}s", "{decade}s {genre} movies", "{genre} films of the "
                 "{decade}s")
_TWO_GENRES = ("{first} {second} movies", "{first} and {second}")
_TITLE_WORD = ("{word}", "movies called {word}", "{word} film")


def _title_words(title: str) -> List[str]:
  """Content words of a title; MovieLens titles end with "(year)", which is not a word."""
  return [w for w in tokens(re.sub(r"\(\d{4}\)\s*$", "", title))
          if len(w) >= 4 and not w.isdigit() and w not in _STOPWORDS]


@dataclasses.dataclass(frozen=True)
class SearchIntent:
  """What a synthetic query asks for; an item is relevant when it has all of it."""
  text: str
  genres: Tuple[str, ...] = ()
  decade: Optional[int] = None
  title_word: Optional[str] = None

  def matches(self, item: Mapping[str, object]) -> bool:
    categories = {str(c).lower() for c in item.get("categories") or []}
    if not set(self.genres) <= categories:
      return False
    year = item.get("year")
    if self.decade is not None and (not year or int(year) // 10 * 10 != self.decade):
      return False
    return self.title_word is None or self.title_word in _title_words(str(item.get("title", "")))


def synthetic_intent(item: Mapping[str, object], rng: np.random.Generator
                     ) -> Optional[SearchIntent]:
  """A query the item answers, drawn from the shapes its metadata allows; None if none does."""
  genres = sorted({str(c).lower() for c in item.get("categories") or []})
  words = _title_words(str(item.get("title", "")))
  year = item.get("year")
  shapes = []
  if genres and year:
    shapes.append("genre_decade")
  if len(genres) >= 2:
    shapes.append("two_genres")
  if words:
    shapes.append("title_word")
  if not shapes:
    return None
  shape = shapes[rng.integers(len(shapes))]
  if shape == "genre_decade":
    genre, decade = genres[rng.integers(len(genres))], int(year) // 10 * 10
    template = _GENRE_DECADE[rng.integers(len(_GENRE_DECADE))]
    return SearchIntent(template.format(genre=genre, decade=decade), (genre,), decade)
  if shape == "two_genres":
    first, second = (genres[i] for i in sorted(rng.choice(len(genres), 2, replace=False)))
    template = _TWO_GENRES[rng.integers(len(_TWO_GENRES))]
    return SearchIntent(template.format(first=first, second=second), (first, second))
  word = words[rng.integers(len(words))]
  return SearchIntent(_TITLE_WORD[rng.integers(len(_TITLE_WORD))].format(word=word),
                      title_word=word)
