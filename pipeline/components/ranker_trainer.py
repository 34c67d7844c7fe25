"""RankerTrainer: trains the ranking stage's scorers on the mined lists and exports the ranker
with its features built on the sources fit on the whole training split (what will serve).

A component of its own rather than TFX's Trainer because the export needs three inputs besides
the lists (the full retrieval model, the item-to-item tables and the catalog), which the stock
Trainer cannot take.
"""
import json
import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.components.item_to_item_trainer import FULL, tables_dir
from pipeline.components.ranking_list_miner import CATALOG_FILE
from trainer.item_to_item.model import ItemToItemTables
from trainer.ranker import lists as L
from trainer.ranker.catalog import ItemCatalog
from trainer.ranker.features import RankingFeatures, category_vocabulary
from trainer.ranker.trainer import RankerSettings, train_and_export
from transform import features as F


@tfx.dsl.components.component
def RankerTrainer(  # pylint: disable=invalid-name
    candidate_lists: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    retrieval_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    item_to_item_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    settings: tfx.dsl.components.Parameter[str],
    candidates_per_source: tfx.dsl.components.Parameter[int],
    base_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model] = None,
) -> None:
  """`settings`: JSON of RankerSettings fields (defaults in pipeline/config.py RankingStage).
  `base_model`: the last blessed ranker, whose weights the scorers start from where they fit
  (trainer/ranker/warm_start.py); absent, they train cold."""
  catalog = ItemCatalog.load(os.path.join(candidate_lists.uri, CATALOG_FILE))
  features = RankingFeatures(
      catalog, tf.saved_model.load(serving_model_dir(retrieval_model)),
      ItemToItemTables.load(tables_dir(item_to_item_model.uri, FULL)),
      category_vocabulary(catalog, F.CATEGORY_VOCAB_SIZE), candidates_per_source)
  split = lambda name: tf.io.gfile.glob(  # noqa: E731
      os.path.join(candidate_lists.uri, f"Split-{name}", "*"))
  train_and_export(RankerSettings.from_config(json.loads(settings)), split(L.TRAIN),
                   split(L.VALIDATION), features, serving_model_dir(model), model.uri,
                   base_model.uri if base_model is not None else None)
