"""New catalog items, recommended before any retrain: the catalog's items the pushed retrieval
model does not know, embedded by the model itself from their raw content, retrieved beside it.

A multimodal retrieval model (`--content`) exports `known_items` (is an item among its
candidates?) and an `item_embeddings` signature that embeds an unknown item's text and image
with the encoders inside it. So adding an item is adding its row (and image) to the catalog
under the data root: `refresh()` (the server calls it every `--catalog_refresh_s`) re-reads the
catalog, asks each retrieval version in use which items it does not know, embeds those through
TF Serving, and keeps one small index per version. A request's query embedding scores them in
the same space as the model's own candidates, so a new item enters the retrieval answer exactly
when its score would have put it there. A model without `known_items` (id-only) cannot place an
unseen item, and gets no fresh items.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import grpc
import numpy as np

from serving.context_store import Catalog
from serving.model_client import ModelClient
from serving.models_config import RETRIEVAL
from pipeline.data.images import read_image, resolve_image_uri
from trainer.retrieval import signature
from transform import features as F

log = logging.getLogger(__name__)
KNOWN_ITEMS = "known_items"
# Bounds on the work and memory of one refresh: the most unknown items indexed per model version
# (a retrain is due long before), and the items per Predict call.
MAX_FRESH_ITEMS = 10_000
_KNOWN_BATCH, _EMBED_BATCH = 128, 8


@dataclasses.dataclass(frozen=True)
class FreshIndex:
  """One retrieval version's unknown catalog items and their embeddings [n, d]."""
  version: int
  item_ids: Tuple[str, ...]
  embeddings: np.ndarray
  catalog_size: int

  def top(self, query: np.ndarray, excluded: Iterable[str], k: int) -> List[Tuple[str, float]]:
    """The k best (item, score) for a query embedding [d], history items left out."""
    if not self.item_ids:
      return []
    scores = self.embeddings @ query
    skip = set(excluded)
    order = np.argsort(-scores, kind="stable")
    return [(self.item_ids[i], float(scores[i])) for i in order
            if self.item_ids[i] not in skip][:k]


class FreshItems:
  """The fresh index of each retrieval version in use, rebuilt when the catalog grows."""

  def __init__(self, client: ModelClient, catalog: Catalog, data_root: str,
               timeout_s: float = 120.0):
    self._client, self._catalog, self._data_root = client, catalog, data_root
    self._timeout = timeout_s
    self._lock = threading.Lock()
    self._indexes: Dict[int, FreshIndex] = {}

  def index(self, version: int) -> FreshIndex:
    with self._lock:
      return self._indexes.get(version, FreshIndex(version, (), np.zeros((0, 0)), 0))

  def refresh(self, labels: Iterable[str]) -> None:
    """Re-reads the catalog and rebuilds the index of each labelled retrieval version whose
    catalog changed; a model or call that fails is logged and retried at the next refresh."""
    added = self._catalog.refresh()
    if added:
      log.info("catalog: %d new items", len(added))
    if not self._client.is_available(RETRIEVAL):
      return
    built: Dict[int, FreshIndex] = {}
    for label in sorted(set(labels)):
      try:
        info = self._client.signature_info(RETRIEVAL, KNOWN_ITEMS, label)
      except KeyError:
        continue  # an id-only model: it cannot place an item it never saw
      current = self.index(info.version)
      if current.catalog_size == len(self._catalog.items):
        built[info.version] = current
        continue
      try:
        built[info.version] = self._build(info.version)
      except Exception as error:  # pylint: disable=broad-except  (logged; next refresh retries)
        log.warning("fresh items for retrieval version %d not indexed: %s", info.version, error)
    with self._lock:
      self._indexes = built

  def _build(self, version: int) -> FreshIndex:
    started = time.time()
    item_ids = list(self._catalog.items)
    unknown: List[str] = []
    for start in range(0, len(item_ids), _KNOWN_BATCH):
      chunk = item_ids[start:start + _KNOWN_BATCH]
      out = self._predict(KNOWN_ITEMS, {F.ITEM_ID: np.array(chunk, dtype=object)}, version)
      unknown += [item for item, known in zip(chunk, out[signature.KNOWN]) if not known]
    if len(unknown) > MAX_FRESH_ITEMS:
      log.warning("%d catalog items are unknown to retrieval version %d; indexing the first %d "
                  "(retrain to place the rest)", len(unknown), version, MAX_FRESH_ITEMS)
      unknown = unknown[:MAX_FRESH_ITEMS]
    embedded: List[str] = []
    parts: List[np.ndarray] = []
    for start in range(0, len(unknown), _EMBED_BATCH):
      for items, vectors in self._embed(unknown[start:start + _EMBED_BATCH], version):
        embedded += items
        parts.append(vectors)
    embeddings = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    log.info("fresh items: %d catalog items unknown to retrieval version %d, %d embedded in "
             "%.1f s", len(unknown), version, len(embedded), time.time() - started)
    return FreshIndex(version, tuple(embedded), embeddings, len(item_ids))

  def _embed(self, items: Sequence[str], version: int
             ) -> Iterable[Tuple[List[str], np.ndarray]]:
    """(items, embeddings) of a batch; if the batch fails (an image too large for a Predict,
    say), item by item, leaving out, and logging, the ones that fail alone."""
    rows = [self._content_row(item) for item in items]
    try:
      yield list(items), self._predict("item_embeddings", signature.item_inputs(rows),
                                       version)[signature.EMBEDDING]
      return
    except grpc.RpcError as error:
      if len(items) == 1:
        log.warning("fresh item %s not embedded: %s", items[0], error.details())
        return
    for item in items:
      yield from self._embed([item], version)

  def _predict(self, signature_name: str, inputs: Mapping[str, np.ndarray], version: int
               ) -> Dict[str, np.ndarray]:
    # Alone: its images' bytes must not bring a merged Predict past gRPC's message limit, nor
    # its failure fail the requests merged with it.
    return self._client.predict(RETRIEVAL, inputs, signature_name, str(version), self._timeout,
                                mergeable=False)

  def _content_row(self, item_id: str) -> Dict[str, object]:
    """The catalog row with its image's bytes (none if it has no image or it does not read:
    the model then embeds the text alone)."""
    row = dict(self._catalog.items[item_id])
    if row.get("image_uri"):
      ok, data = read_image(resolve_image_uri(self._data_root, str(row["image_uri"])))
      if ok:
        row[signature.IMAGE_BYTES] = data
      else:
        log.warning("fresh item %s: image %s: %s; embedded from its text", item_id,
                    row["image_uri"], data)
    return row


class RefreshLoop:
  """Calls `FreshItems.refresh` now and every `period_s` seconds on a daemon thread, until
  stopped (0: only the first time)."""

  def __init__(self, fresh: FreshItems, labels: Iterable[str], period_s: float):
    self._fresh, self._labels, self._period = fresh, tuple(labels), period_s
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="fresh-items", daemon=True)

  def start(self) -> "RefreshLoop":
    self._thread.start()
    return self

  def _run(self) -> None:
    while True:
      try:
        self._fresh.refresh(self._labels)
      except Exception as error:  # pylint: disable=broad-except  (a bad catalog file: logged)
        log.warning("catalog refresh failed: %s", error)
      if self._period <= 0 or self._stop.wait(self._period):
        return

  def stop(self) -> None:
    self._stop.set()


def merge_fresh(answer: Sequence[Tuple[str, float]], fresh: Sequence[Tuple[str, float]]
                ) -> List[Tuple[str, float]]:
  """The retrieval answer with the fresh items that score above its last item, as long as it
  was (the fresh ones take the places their scores earn)."""
  if not answer:
    return list(fresh)
  floor = answer[-1][1]
  merged = sorted(list(answer) + [f for f in fresh if f[1] > floor], key=lambda x: -x[1])
  return merged[:len(answer)]
