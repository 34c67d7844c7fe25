"""preprocessing_fn through a real tf.Transform Beam run, parsed with the curated schema."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from pipeline.data.contract import CURATED_SCHEMA
from transform import features as F
from transform.preprocessing import preprocessing_fn


def _row(user, item, history, title, categories, year=None, age=None, gender=None, fold=-1):
  row = {F.USER_ID: [user], F.ITEM_ID: [item], F.EVENT: ["rating"], F.TIMESTAMP: [1],
         F.HISTORY: history, F.HISTORY_FOLDS: [1] * len(history), F.FOLD: [fold],
         F.USER_HISTORY_LENGTH: [len(history)], F.ACTIVITY_SEGMENT: ["0-9"],
         F.TITLE: [title], F.CATEGORIES: categories, F.YEAR: [year] if year else [],
         F.AGE: [age] if age else [], F.GENDER: [gender] if gender else []}
  for name in (F.RATING, F.QUERY, F.SESSION_ID, F.SPAN, F.OCCUPATION, F.DESCRIPTION,
               F.IMAGE_URI):
    row[name] = []
  return row


ROWS = [
    _row("u1", "i1", [], "Toy Story", ["Animation", "Comedy"], 1995, 20, "F"),
    _row("u1", "i2", ["i1"], "Heat", ["Crime"], 1995, 20, "F", fold=2),
    _row("u2", "i1", ["i2", "i1", "unseen-item"], "Toy Story", ["Animation", "Comedy"], 1995),
    _row("u3", "i3", [], "Alien: Resurrection!", [], None, 40, "M"),
]


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
  schema = tfdv.load_schema_text(CURATED_SCHEMA)
  metadata = dataset_metadata.DatasetMetadata(schema)
  assert isinstance(schema_utils.schema_as_feature_spec(schema).feature_spec[F.HISTORY],
                    tf.io.VarLenFeature)
  temp = str(tmp_path_factory.mktemp("tft"))
  with tft_beam.Context(temp_dir=temp, force_tf_compat_v1=False):
    (data, _), transform_fn = (ROWS, metadata) | tft_beam.AnalyzeAndTransformDataset(
        preprocessing_fn, output_record_batches=False)
  output_dir = str(tmp_path_factory.mktemp("transform_output"))
  _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
  return data, tft.TFTransformOutput(output_dir)


def test_ids_use_vocabularies_with_an_oov_bucket(transformed):
  data, output = transformed
  items = output.vocabulary_by_name(F.ITEM_VOCAB)
  assert sorted(items) == [b"i1", b"i2", b"i3"]
  index = {item: i for i, item in enumerate(items)}
  assert [row[F.ITEM_INDEX] for row in data] == [index[b"i1"], index[b"i2"], index[b"i1"],
                                                 index[b"i3"]]
  oov = len(items)  # the single OOV bucket comes right after the vocabulary
  assert list(data[2][F.HISTORY_INDEX][:4]) == [index[b"i2"], index[b"i1"], oov, -1]


def test_history_and_title_are_padded_to_fixed_length(transformed):
  data, output = transformed
  for row in data:
    assert row[F.HISTORY_INDEX].shape == (F.HISTORY_LENGTH,)
    assert row[F.TITLE_TOKENS].shape == (F.TITLE_LENGTH,)
  assert list(data[0][F.HISTORY_INDEX]) == [-1] * F.HISTORY_LENGTH
  tokens = output.vocabulary_by_name(F.TITLE_VOCAB)
  alien = [tokens[i] for i in data[3][F.TITLE_TOKENS] if i >= 0]
  assert alien == [b"alien", b"resurrection"]  # lower-cased, punctuation stripped


def test_folds_pass_through_aligned_with_the_history(transformed):
  data, _ = transformed
  assert [int(row[F.FOLD_ID]) for row in data] == [-1, 2, -1, -1]
  assert list(data[2][F.HISTORY_FOLD_IDS]) == [1, 1, 1] + [F.NO_FOLD] * (F.HISTORY_LENGTH - 3)
  assert list(data[0][F.HISTORY_FOLD_IDS]) == [F.NO_FOLD] * F.HISTORY_LENGTH


def test_categories_are_multi_hot(transformed):
  data, output = transformed
  categories = output.vocabulary_by_name(F.CATEGORY_VOCAB)
  hot = data[0][F.CATEGORY_MULTI_HOT]
  assert hot.shape == (F.CATEGORY_VOCAB_SIZE + F.OOV_BUCKETS,)
  assert {categories[i] for i in np.flatnonzero(hot)} == {b"Animation", b"Comedy"}
  assert data[3][F.CATEGORY_MULTI_HOT].sum() == 0  # no categories: all zeros


def test_numeric_features_are_normalised_and_missing_means_mean(transformed):
  data, _ = transformed
  ages = [row[F.AGE_Z] for row in data]
  # present ages 20, 20, 40: mean 26.67, std 9.43; u2 has none -> 0
  assert ages[0] == pytest.approx((20 - 80 / 3) / np.sqrt(800 / 9), rel=1e-4)
  assert ages[2] == 0.0
  assert data[3][F.YEAR_BUCKET] == F.YEAR_BUCKETS  # missing year: its own bucket
  assert data[0][F.YEAR_BUCKET] < F.YEAR_BUCKETS


def test_missing_categorical_maps_to_oov(transformed):
  data, output = transformed
  genders = output.vocabulary_by_name(F.GENDER_VOCAB)
  assert sorted(genders) == [b"F", b"M"]
  assert data[2][F.GENDER_INDEX] == len(genders)
