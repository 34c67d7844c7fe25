"""Writes a table in the contract's CSV form, streamed row by row through tf.io.gfile (so
`gs://` works and no table is held in memory); the generators of demo data share it."""
from __future__ import annotations

import csv
from typing import Iterable, Sequence

import tensorflow as tf


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> int:
  """Writes `header` then `rows` to `path` (its folder made); returns the rows written."""
  tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  with tf.io.gfile.GFile(path, "w") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    count = 0
    for row in rows:
      writer.writerow(row)
      count += 1
  return count
