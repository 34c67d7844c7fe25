"""The reports open offline and show what the run did: the statistics page (rendered here, not
TFDV's page, which loads Facets from a CDN) and the run page, checked in a real headless browser
(Debian's chromium; scripts/run_tests.sh installs it as root, the browser checks skip without it).
"""
import html
import os
import re
import shutil
import subprocess

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from matplotlib import image

from pipeline.components import drift
from pipeline.data import contract, parsing
from pipeline.data.examples import encode_example
from pipeline.evaluation.report import OVERALL
from pipeline.reports import statistics_page

# A reference to anything outside the file: an absolute or protocol-relative URL in src/href.
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", re.IGNORECASE)


def _chromium() -> str:
  found = shutil.which("chromium") or shutil.which("chromium-browser")
  if not found:
    pytest.skip("chromium is not installed (Debian: apt-get install chromium, which "
                "scripts/run_tests.sh does as root): the headless-browser checks skip")
  return found


def _browse(path: str, *args: str) -> str:
  """Chromium headless on a local file with every host unresolvable (nothing can load from a
  network); returns what it printed (--dump-dom: the rendered DOM)."""
  done = subprocess.run(
      [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
       "--host-resolver-rules=MAP * ~NOTFOUND", *args, f"file://{os.path.abspath(path)}"],
      capture_output=True, text=True, timeout=180, check=True)
  return done.stdout


def _assert_offline(page: str) -> None:
  assert not EXTERNAL.search(page), EXTERNAL.search(page)
  assert "http://" not in page and "https://" not in page


def _write_statistics(tmp_path, rows_by_split):
  """Real StatisticsGen-shaped statistics (sliced by span, as the pipeline's) of examples."""
  for split, rows in rows_by_split.items():
    path = str(tmp_path / f"{split}.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
      for index, row in enumerate(rows):
        writer.write(encode_example({"span": "2026-12-0" + str(1 + index % 2),
                                     "item_id": row["item_id"], "event": row["event"],
                                     "rating": row["rating"], "timestamp": row["timestamp"]}))
    statistics = tfdv.generate_statistics_from_tfrecord(path, stats_options=drift.STATS_OPTIONS)
    os.makedirs(tmp_path / "stats" / f"Split-{split}")
    with open(tmp_path / "stats" / f"Split-{split}" / "FeatureStats.pb", "wb") as f:
      f.write(statistics.SerializeToString())
  return str(tmp_path / "stats")


def test_statistics_page_is_offline_and_shows_the_unsliced_counts(slice_root, tmp_path):
  rows = list(parsing.read_table(slice_root, contract.INTERACTIONS))[:3000]
  # Every 10th training row without a rating (a click): the rating misses in 10% of them.
  train = [dict(row, rating=None) if i % 10 == 0 else row for i, row in enumerate(rows[:2400])]
  uri = _write_statistics(tmp_path, {"train": train, "eval": rows[2400:]})
  splits = statistics_page.load_default_slices(uri, ["train", "eval"])
  page = statistics_page.page(splits)
  _assert_offline(page)
  path = tmp_path / "statistics.html"
  path.write_text(page)
  dom = _browse(str(path), "--dump-dom")
  # Train and eval side by side: every example has an item_id; the rating's count is the rows
  # that have one, of the whole split (not of one span's slice).
  assert re.search(r"<td>item_id</td><td>STRING</td><td>2400</td><td>0\.0%</td><td>600</td>",
                   dom)
  assert re.search(r"<td>rating</td><td>FLOAT</td><td>2160</td><td>10\.0%</td><td>600</td>", dom)
  assert dom.count("<img") >= 3 and "data:image/png;base64," in dom


def test_run_page_renders_offline_with_the_summary_numbers(first_run, tmp_path):
  config, _, _, summary = first_run
  page_path = summary["page"]
  assert page_path == os.path.join(config.runs_dir, summary["run_id"], "index.html")
  with open(page_path) as f:
    _assert_offline(f.read())
  dom = _browse(page_path, "--dump-dom")
  assert f"Run {summary['run_id']}" in dom and "succeeded" in dom
  candidate = summary["evaluation"]["metrics"]["candidate"][OVERALL]
  assert f"{candidate['recall@100']:.4f}" in dom and f"{candidate['ndcg@10']:.4f}" in dom
  cascade = summary["ranker"]["evaluation"]["metrics"]["cascade"][OVERALL]
  assert f"{cascade['map']:.4f}" in dom
  assert all(html.escape(reason, quote=False) in dom for reason in summary["evaluation"]["reasons"])
  assert summary["pushed_to"] in dom
  assert all(f"<td>{name}</td><td>{seconds:.1f}</td>" in dom
             for name, seconds in summary["component_seconds"].items())
  assert "tensorboard --logdir" in dom and os.path.dirname(summary["evaluation_report"]) in dom
  assert "<td>item_id</td>" in dom  # the data statistics, train vs eval
  shot = str(tmp_path / "page.png")
  _browse(page_path, f"--screenshot={shot}", "--window-size=1200,2000")
  pixels = image.imread(shot)
  assert pixels.shape[:2] == (2000, 1200) and pixels.std() > 0.05  # not a blank page
