"""Every feature the pipeline emits, transforms and serves, named once.

Raw features are what the ExampleGen writes into tf.Examples (and what serving accepts); the
transformed ones are what the towers consume. The raw names of pass-through columns equal the
raw data contract's column names (`pipeline/data/contract.py`).
"""
from __future__ import annotations

import re
from typing import List, Tuple

from pipeline.data import contract

# --- Raw example features (ExampleGen output) --------------------------------------------
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT = "event"
RATING = "rating"
TIMESTAMP = "timestamp"
QUERY = "query"
SESSION_ID = "session_id"
# The dated span folder the interaction was read from (pipeline/data/spans.py), on the rows of
# the window's two newest spans only; absent for older spans and a flat data root. Statistics
# are sliced by it, so validation compares the newest span with the one before (drift), at the
# cost of two slices whatever the window's length.
SPAN = "span"
# The user's positive interactions strictly before this one, most recent first.
HISTORY = "history"
# A request's unix seconds of each HISTORY item (the ranker reads when the user was active).
HISTORY_TIMESTAMPS = "history_timestamps"
# How many positive interactions the user had before this one (uncapped) and its bucket.
USER_HISTORY_LENGTH = "user_history_length"
ACTIVITY_SEGMENT = "activity_segment"
AGE = "age"
GENDER = "gender"
OCCUPATION = "occupation"
TITLE = "title"
DESCRIPTION = "description"
CATEGORIES = "categories"
YEAR = "year"
IMAGE_URI = "image_uri"

# The most recent interactions kept in HISTORY (older ones only count in USER_HISTORY_LENGTH).
HISTORY_LENGTH = 20
# The most items of a user's history a request carries, most recent first: the item-to-item
# source and the ranker read all of them (EASE-style scores need the whole history), the
# two-tower the latest HISTORY_LENGTH.
MAX_HISTORY = 500
# What an example's HISTORY holds: the user's items from strictly earlier timestamps (a
# sequence, for logs whose order means something), or all the user's other training-split items
# (a profile, for logs whose order doesn't: bulk ratings, catalogs rated in one sitting). Neither
# ever holds an eval-split item in a training example.
HISTORY_EARLIER = "earlier"
HISTORY_ALL_TRAINING = "all_training"
HISTORY_SCOPES: Tuple[str, ...] = (HISTORY_ALL_TRAINING, HISTORY_EARLIER)
# The eval split each history scope pairs with: a random share of each user's interactions when
# order means nothing, the latest ones for a sequence (evaluating what comes next).
EVAL_RANDOM = "random"
EVAL_LATEST = "latest"
EVAL_SPLITS: Tuple[str, ...] = (EVAL_RANDOM, EVAL_LATEST)
PAIRED_EVAL_SPLIT = {HISTORY_ALL_TRAINING: EVAL_RANDOM, HISTORY_EARLIER: EVAL_LATEST}
# The fold of a training interaction (-1 = never held out, and every eval interaction): the
# ranker's training lists hold each fold out in turn, with sources fit on the other folds, so
# no source has seen the interactions a list is labelled with. HISTORY_FOLDS: the fold of each
# HISTORY item, so a fold's sources can leave that fold out of the histories they learn from.
FOLD = "fold"
HISTORY_FOLDS = "history_folds"
NO_FOLD = -1
# Activity segments for sliced evaluation: (label, lower bound of prior interactions).
ACTIVITY_SEGMENTS: Tuple[Tuple[str, int], ...] = (("0-9", 0), ("10-49", 10), ("50-199", 50),
                                                  ("200+", 200))

QUERY_RAW_FEATURES: Tuple[str, ...] = (USER_ID, HISTORY, AGE, GENDER, OCCUPATION)
CANDIDATE_RAW_FEATURES: Tuple[str, ...] = (ITEM_ID, TITLE, CATEGORIES, YEAR)
# Features the slicing and evaluation use that no tower reads.
SLICE_FEATURES: Tuple[str, ...] = (GENDER, ACTIVITY_SEGMENT)

# --- Transformed features (preprocessing_fn output) --------------------------------------
USER_INDEX = "user_id_index"
ITEM_INDEX = "item_id_index"
HISTORY_INDEX = "history_index"  # [HISTORY_LENGTH] item indices, -1 padded
FOLD_ID = "fold_id"  # FOLD as is (NO_FOLD when absent)
HISTORY_FOLD_IDS = "history_fold_ids"  # [HISTORY_LENGTH] HISTORY_FOLDS, aligned, NO_FOLD padded
AGE_Z = "age_z"
GENDER_INDEX = "gender_index"
OCCUPATION_INDEX = "occupation_index"
TITLE_TOKENS = "title_tokens"  # [TITLE_LENGTH] token indices, -1 padded
CATEGORY_MULTI_HOT = "category_multi_hot"  # [CATEGORY_VOCAB_SIZE + 1] (last slot: OOV)
YEAR_Z = "year_z"
YEAR_BUCKET = "year_bucket"

TITLE_LENGTH = 12
# Title (and search) tokens: lower-cased runs of these characters; the transform graph and the
# Python side (lexical search, synthetic queries) split text the same way.
TOKEN_CHARS = "a-z0-9'"
_TOKEN = re.compile(f"[{TOKEN_CHARS}]+")
TITLE_VOCAB_SIZE = 20_000
CATEGORY_VOCAB_SIZE = 32
YEAR_BUCKETS = 10
OOV_BUCKETS = 1

QUERY_FEATURES: Tuple[str, ...] = (USER_INDEX, HISTORY_INDEX, AGE_Z, GENDER_INDEX, OCCUPATION_INDEX)
CANDIDATE_FEATURES: Tuple[str, ...] = (ITEM_INDEX, TITLE_TOKENS, CATEGORY_MULTI_HOT, YEAR_Z,
                                       YEAR_BUCKET)

# Vocabulary file names (tft.TFTransformOutput.vocabulary_by_name).
USER_VOCAB = "user_id"
ITEM_VOCAB = "item_id"
GENDER_VOCAB = "gender"
OCCUPATION_VOCAB = "occupation"
TITLE_VOCAB = "title_token"
CATEGORY_VOCAB = "category"


def held_out_folds(history_scope: str, folds: int) -> Tuple[int, ...]:
  """The folds a run holds out in turn: every fold when order means nothing, only the latest
  (fold 0) for a sequence (see the ExampleGen's fold assignment)."""
  if not folds:
    return ()
  return tuple(range(folds)) if history_scope == HISTORY_ALL_TRAINING else (0,)


def tokens(text: str) -> List[str]:
  """The lower-cased word tokens the transform takes from titles."""
  return _TOKEN.findall(text.lower())


def activity_segment(prior_interactions: int) -> str:
  """The slice label of a user with this many prior interactions."""
  label = ACTIVITY_SEGMENTS[0][0]
  for name, lower in ACTIVITY_SEGMENTS:
    if prior_interactions >= lower:
      label = name
  return label


# The raw table each example feature comes from, so a validation error can name the files.
SOURCE_TABLE = {
    **{name: contract.INTERACTIONS for name in (USER_ID, ITEM_ID, EVENT, RATING, TIMESTAMP, QUERY,
                                                  SESSION_ID, SPAN, HISTORY, HISTORY_FOLDS, FOLD,
                                                  USER_HISTORY_LENGTH, ACTIVITY_SEGMENT)},
    **{name: contract.USERS for name in (AGE, GENDER, OCCUPATION)},
    **{name: contract.ITEMS for name in (TITLE, DESCRIPTION, CATEGORIES, YEAR, IMAGE_URI)},
}
