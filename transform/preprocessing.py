"""The tf.Transform `preprocessing_fn`: raw example features -> the towers' inputs.

Vocabularies, normalisation constants and bucket boundaries are computed once over the train
split by Transform and baked into the transform graph, which every exported model carries, so
serving takes raw features. Optional raw features arrive as SparseTensors (absent = missing);
missing values map to the OOV index or to the mean, never to an error.
"""
from __future__ import annotations

from typing import Dict, Union

import tensorflow as tf
import tensorflow_transform as tft

from transform import features as F

Tensor = Union[tf.Tensor, tf.SparseTensor, tf.RaggedTensor]


def _present_values(x: Tensor) -> tf.Tensor:
  """The values actually present, for analyzers (missing ones must not skew a vocabulary)."""
  return x.values if isinstance(x, tf.SparseTensor) else tf.reshape(x, [-1])


def dense_scalar(x: Tensor, default) -> tf.Tensor:
  """A [batch] tensor from a dense [batch, 1] or sparse [batch, <=1] feature, `default` if absent."""
  if isinstance(x, tf.SparseTensor):
    x = tf.sparse.to_dense(x, default_value=default)
  x = tf.reshape(x, [tf.shape(x)[0], -1])
  padding = tf.fill([tf.shape(x)[0], 1], tf.constant(default, dtype=x.dtype))
  return tf.concat([x, padding], axis=1)[:, 0]


def padded_indices(indices: tf.SparseTensor, length: int) -> tf.Tensor:
  """A [batch, length] int64 tensor of the first `length` indices, -1 padded."""
  dense = tf.sparse.to_dense(indices, default_value=-1)
  padding = tf.fill([tf.shape(dense)[0], length], tf.constant(-1, tf.int64))
  return tf.reshape(tf.concat([dense, padding], axis=1)[:, :length], [-1, length])


def _as_sparse(x: Tensor) -> tf.SparseTensor:
  if isinstance(x, tf.SparseTensor):
    return x
  if isinstance(x, tf.RaggedTensor):
    return x.to_sparse()
  return tf.sparse.from_dense(tf.reshape(x, [tf.shape(x)[0], -1]))


def _vocab_index(x: Tensor, vocab_name: str, top_k=None) -> tf.Tensor:
  """[batch] vocabulary index of a scalar string feature; missing and unseen -> the OOV index."""
  vocab = tft.vocabulary(_present_values(x), top_k=top_k, vocab_filename=vocab_name)
  return tft.apply_vocabulary(dense_scalar(x, ""), vocab, num_oov_buckets=F.OOV_BUCKETS)


def _z_score(x: Tensor) -> tf.Tensor:
  """[batch] float z-score over present values; a missing value becomes 0 (the mean)."""
  x = tf.cast(x, tf.float32)
  values = _present_values(x)
  dense = dense_scalar(x, float("nan"))
  z = (dense - tft.mean(values)) / tf.maximum(tf.sqrt(tft.var(values)), 1e-6)
  return tf.where(tf.math.is_nan(dense), 0.0, z)


def title_tokens(title: Tensor) -> tf.SparseTensor:
  """Lower-cased alphanumeric word tokens of each title."""
  text = tf.strings.lower(dense_scalar(title, ""))
  text = tf.strings.regex_replace(text, f"[^{F.TOKEN_CHARS}]+", " ")
  return tf.strings.split(text).to_sparse()


def preprocessing_fn(inputs: Dict[str, Tensor]) -> Dict[str, tf.Tensor]:
  """Raw features -> the transformed features named in `transform.features`."""
  outputs: Dict[str, tf.Tensor] = {}
  outputs[F.USER_INDEX] = _vocab_index(inputs[F.USER_ID], F.USER_VOCAB)

  item_vocab = tft.vocabulary(_present_values(inputs[F.ITEM_ID]), vocab_filename=F.ITEM_VOCAB)
  outputs[F.ITEM_INDEX] = tft.apply_vocabulary(
      dense_scalar(inputs[F.ITEM_ID], ""), item_vocab, num_oov_buckets=F.OOV_BUCKETS)
  history = tft.apply_vocabulary(_as_sparse(inputs[F.HISTORY]), item_vocab,
                                 num_oov_buckets=F.OOV_BUCKETS)
  outputs[F.HISTORY_INDEX] = padded_indices(history, F.HISTORY_LENGTH)
  # Folds pass through (NO_FOLD is -1, the padding), for the fold models of the ranker stage.
  outputs[F.FOLD_ID] = dense_scalar(inputs[F.FOLD], F.NO_FOLD)
  outputs[F.HISTORY_FOLD_IDS] = padded_indices(_as_sparse(inputs[F.HISTORY_FOLDS]),
                                               F.HISTORY_LENGTH)

  outputs[F.AGE_Z] = _z_score(inputs[F.AGE])
  outputs[F.GENDER_INDEX] = _vocab_index(inputs[F.GENDER], F.GENDER_VOCAB)
  outputs[F.OCCUPATION_INDEX] = _vocab_index(inputs[F.OCCUPATION], F.OCCUPATION_VOCAB)

  tokens = title_tokens(inputs[F.TITLE])
  token_index = tft.compute_and_apply_vocabulary(
      tokens, top_k=F.TITLE_VOCAB_SIZE, num_oov_buckets=F.OOV_BUCKETS,
      vocab_filename=F.TITLE_VOCAB)
  outputs[F.TITLE_TOKENS] = padded_indices(token_index, F.TITLE_LENGTH)

  category_index = tft.compute_and_apply_vocabulary(
      _as_sparse(inputs[F.CATEGORIES]), top_k=F.CATEGORY_VOCAB_SIZE,
      num_oov_buckets=F.OOV_BUCKETS, vocab_filename=F.CATEGORY_VOCAB)
  depth = F.CATEGORY_VOCAB_SIZE + F.OOV_BUCKETS
  one_hot = tf.one_hot(padded_indices(category_index, F.CATEGORY_VOCAB_SIZE), depth)
  outputs[F.CATEGORY_MULTI_HOT] = tf.reduce_max(one_hot, axis=1)

  year = tf.cast(inputs[F.YEAR], tf.float32)
  outputs[F.YEAR_Z] = _z_score(year)
  boundaries = tft.quantiles(_present_values(year), F.YEAR_BUCKETS, epsilon=0.01)
  year_dense = dense_scalar(year, float("nan"))
  # Missing years get a bucket of their own, after the quantile buckets.
  outputs[F.YEAR_BUCKET] = tf.where(
      tf.math.is_nan(year_dense), tf.constant(F.YEAR_BUCKETS, tf.int64),
      tft.apply_buckets(tf.where(tf.math.is_nan(year_dense), 0.0, year_dense), boundaries))
  return outputs
