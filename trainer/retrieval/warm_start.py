"""Warm start of the two towers from the last blessed model's weights.

Every retrieval model saves, beside its SavedModel, its trainable weights by object path and the
vocabularies its id tables are indexed by (`save`). A later run (new spans: new users, items,
title tokens, the order of every vocabulary changed by new counts) builds its model on its own
vocabularies, then `restore` copies every weight of unchanged shape, and each vocabulary-indexed
table row by row through the tokens both vocabularies share (the OOV rows too); rows of new
tokens keep their fresh initialisation and tokens that left the vocabulary are dropped. When
anything else differs (a model setting changed the towers), nothing is copied: the run trains
cold and its report says why.
"""
from __future__ import annotations

import io
import os
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import tensorflow as tf

from transform import features as F

STATE_DIR = "warm_start"        # beside the SavedModel, in the Model artifact
WEIGHTS = "weights.npz"
VOCABULARIES = "vocabularies"   # one file per vocabulary, the transform's own


def state_dir(serving_model_dir: str) -> str:
  """The warm-start state of the model whose SavedModel is `serving_model_dir` (TFX gives the
  run_fn `<model uri>/Format-Serving` for this run and for its base model)."""
  return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), STATE_DIR)


def trainable_by_path(model: tf.keras.Model) -> Dict[str, tf.Variable]:
  """The model's trainable variables under their object paths (attribute names, as in a
  checkpoint), which are the same in every process that builds the same model; a shared
  layer (the item embedding) is found once, under its first path."""
  trainable = {id(v) for v in model.trainable_variables}
  view = tf.train.TrackableView(model)
  found: Dict[str, tf.Variable] = {}
  queue, seen = [("", model)], {id(model)}
  while queue:
    path, node = queue.pop(0)
    for name, child in view.children(node).items():
      if id(child) in seen:
        continue
      seen.add(id(child))
      child_path = f"{path}/{name}" if path else name
      if isinstance(child, tf.Variable):
        if id(child) in trainable:
          found[child_path] = child
      else:
        queue.append((child_path, child))
  return found


def _read_tokens(path: str) -> List[str]:
  with tf.io.gfile.GFile(path, "rb") as f:
    return [line.rstrip(b"\n").decode("utf-8", "replace") for line in f]


def save(model: tf.keras.Model, vocabulary_files: Mapping[str, str], serving_model_dir: str
         ) -> None:
  """Writes the model's weights and its vocabularies beside its SavedModel."""
  directory = state_dir(serving_model_dir)
  tf.io.gfile.makedirs(os.path.join(directory, VOCABULARIES))
  buffer = io.BytesIO()
  np.savez(buffer, **{path: v.numpy() for path, v in trainable_by_path(model).items()})
  with tf.io.gfile.GFile(os.path.join(directory, WEIGHTS), "wb") as f:
    f.write(buffer.getvalue())
  for name in {name for _, name in model.vocabulary_tables()}:
    tf.io.gfile.copy(vocabulary_files[name], os.path.join(directory, VOCABULARIES, name),
                     overwrite=True)


def remap_rows(old: np.ndarray, old_tokens: Sequence[str], fresh: np.ndarray,
               new_tokens: Sequence[str], oov_rows: int = F.OOV_BUCKETS) -> np.ndarray:
  """A table indexed by `new_tokens`: each shared token's old row, the old OOV rows (they follow
  the tokens), and `fresh` rows for the rest."""
  table = fresh.copy()
  old_index = {token: row for row, token in enumerate(old_tokens)}
  pairs = [(row, old_index[token]) for row, token in enumerate(new_tokens) if token in old_index]
  if pairs:
    new_rows, old_rows = map(list, zip(*pairs))
    table[new_rows] = old[old_rows]
  oov = min(oov_rows, len(table) - len(new_tokens), len(old) - len(old_tokens))
  if oov > 0:
    table[len(new_tokens):len(new_tokens) + oov] = old[len(old_tokens):len(old_tokens) + oov]
  return table


def _mismatch(old: Mapping[str, np.ndarray], new: Mapping[str, tf.Variable],
              tables: Mapping[int, str]) -> str:
  """Why the base model's weights cannot seed this model ('' when they can)."""
  if set(old) != set(new):
    return (f"the towers differ (weights only in the base model: {sorted(set(old) - set(new))}, "
            f"only in this one: {sorted(set(new) - set(old))})")
  for path, variable in new.items():
    shape, old_shape = tuple(variable.shape), old[path].shape
    if (shape[1:] if id(variable) in tables else shape) != (
        old_shape[1:] if id(variable) in tables else old_shape):
      return f"{path} has shape {shape}, {old_shape} in the base model"
  return ""


def restore(model: tf.keras.Model, vocabulary_files: Mapping[str, str], base_model_dir: str
            ) -> Dict[str, Any]:
  """Seeds the built `model` from the base model's saved state; returns what it did (the
  report: warm or not, why not, rows kept and new per vocabulary)."""
  directory = state_dir(base_model_dir)
  report: Dict[str, Any] = {"base_model": base_model_dir, "warm": False}
  if not tf.io.gfile.exists(os.path.join(directory, WEIGHTS)):
    report["reason"] = f"{directory} has no saved weights (a model from before warm starts)"
    return report
  with tf.io.gfile.GFile(os.path.join(directory, WEIGHTS), "rb") as f:
    old = dict(np.load(io.BytesIO(f.read())))
  new = trainable_by_path(model)
  tables = {id(variable): name for variable, name in model.vocabulary_tables()}
  reason = _mismatch(old, new, tables)
  if reason:
    report["reason"] = reason
    return report
  tokens = {name: (_read_tokens(os.path.join(directory, VOCABULARIES, name)),
                   _read_tokens(vocabulary_files[name])) for name in set(tables.values())}
  for path, variable in new.items():
    name = tables.get(id(variable))
    if name is None:
      variable.assign(old[path])
    else:
      old_tokens, new_tokens = tokens[name]
      variable.assign(remap_rows(old[path], old_tokens, variable.numpy(), new_tokens))
  report["warm"] = True
  report["vocabularies"] = {
      name: {"kept": len(set(old_tokens) & set(new_tokens)),
             "new": len(set(new_tokens) - set(old_tokens)),
             "dropped": len(set(old_tokens) - set(new_tokens))}
      for name, (old_tokens, new_tokens) in tokens.items()}
  return report

