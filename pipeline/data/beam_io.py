"""Beam source for one contract table: every file under `<data_root>/<table>/`, parsed."""
from __future__ import annotations

import apache_beam as beam

from pipeline.data import parsing


class ReadTable(beam.PTransform):
  """Reads a table's files in parallel, one file per element, rows streamed (never whole files).

  Files are listed at construction so a missing required table fails while the pipeline is
  being built, not minutes later on a worker.
  """

  def __init__(self, data_root: str, table: str):
    super().__init__()
    self._table = table
    self._files = parsing.list_table_files(data_root, table)

  def default_label(self) -> str:
    # Distinct per table, so several ReadTable in one pipeline don't need explicit labels.
    return f"ReadTable[{self._table}]"

  def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
    table = self._table
    if not self._files:  # Only an optional table gets here; list_table_files rejects the rest.
      return pbegin | f"NoFiles[{table}]" >> beam.Create([])
    return (
        pbegin
        | f"ListFiles[{table}]" >> beam.Create(self._files)
        # Spreads files over workers; without it a runner may fuse all reads onto one.
        | f"SpreadFiles[{table}]" >> beam.Reshuffle()
        | f"ParseRows[{table}]" >> beam.FlatMap(parsing.read_file_rows, table))
