"""The SYNTHETIC log generator behind benchmarks/pipeline_scaling.py: readable through the
contract's own reader, exactly the rows asked for, every reference resolvable, every timestamp
in its year, sessions and impressions present, popularity heavy-tailed, deterministic; and the
benchmark's growth fit recovers known exponents."""
import collections
import filecmp
import os

import pytest

from benchmarks.pipeline_scaling import exponents, growth_exponent, table
from pipeline.data import contract, parsing, synthetic_logs

ROWS, ITEMS, SHARD = 4000, 500, 1000


@pytest.fixture(scope="module")
def log(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synthetic_logs"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(synthetic_logs.SETTINGS, "rows_per_shard", SHARD)
    counts = synthetic_logs.write_synthetic_logs(root, ROWS, ITEMS, seed=0)
  tables = {t: list(parsing.read_table(root, t)) for t in contract.TABLES}
  return root, counts, tables


def test_exact_rows_in_shards_every_reference_resolves(log):
  root, counts, tables = log
  interactions, items, users = (tables[t] for t in
                                (contract.INTERACTIONS, contract.ITEMS, contract.USERS))
  assert len(interactions) == counts[contract.INTERACTIONS] == ROWS
  assert len(items) == counts[contract.ITEMS] == ITEMS
  assert counts["interaction_shards"] == ROWS // SHARD
  assert len(os.listdir(os.path.join(root, contract.INTERACTIONS))) == ROWS // SHARD
  item_ids, user_ids = {r["item_id"] for r in items}, {r["user_id"] for r in users}
  assert len(item_ids) == ITEMS and len(user_ids) == len(users) == counts[contract.USERS]
  assert {r["item_id"] for r in interactions} <= item_ids
  assert {r["user_id"] for r in interactions} == user_ids
  assert all(1 <= len(r["categories"]) <= 3 for r in items)
  assert all(16 <= r["age"] <= 79 and r["occupation"] for r in users)
  with open(os.path.join(root, "SYNTHETIC_README.txt")) as f:
    assert f.read().startswith("SYNTHETIC DATA")


def test_timestamps_sessions_and_events_look_like_a_shop(log):
  _, _, tables = log
  interactions = tables[contract.INTERACTIONS]
  start = synthetic_logs.SETTINGS["epoch"]
  end = start + synthetic_logs.SETTINGS["window_days"] * 86400
  assert all(start <= r["timestamp"] <= end for r in interactions)
  events = collections.Counter(r["event"] for r in interactions)
  assert set(events) == {contract.IMPRESSION, *synthetic_logs.SETTINGS["funnel"]}
  assert 0.10 < events[contract.IMPRESSION] / ROWS < 0.20
  by_user = collections.defaultdict(list)
  for r in interactions:
    by_user[r["user_id"]].append(r)
  activity = sorted(len(rows) for rows in by_user.values())
  assert activity[0] >= synthetic_logs.SETTINGS["min_rows"]
  assert activity[-1] > 5 * activity[len(activity) // 2]  # heavy-tailed, not uniform
  for rows in by_user.values():  # written in time order, sessions contiguous
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    sessions = [r["session_id"] for r in rows]
    assert len(set(sessions)) == len([s for i, s in enumerate(sessions)
                                      if i == 0 or s != sessions[i - 1]])
  picks = collections.Counter(r["item_id"] for r in interactions
                              if r["event"] != contract.IMPRESSION)
  top = sum(count for _, count in picks.most_common(ITEMS // 10))
  assert top / sum(picks.values()) > 0.35  # a tenth of the catalog takes a large share


def test_same_arguments_same_bytes_another_seed_another_log(log, tmp_path):
  root, _, _ = log
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(synthetic_logs.SETTINGS, "rows_per_shard", SHARD)
    synthetic_logs.write_synthetic_logs(str(tmp_path / "again"), ROWS, ITEMS, seed=0)
    synthetic_logs.write_synthetic_logs(str(tmp_path / "other"), ROWS, ITEMS, seed=1)
  for table in contract.TABLES:
    names = sorted(os.listdir(os.path.join(root, table)))
    _, mismatch, errors = filecmp.cmpfiles(os.path.join(root, table),
                                           str(tmp_path / "again" / table), names, shallow=False)
    assert not mismatch and not errors, (table, mismatch, errors)
  first = os.path.join(contract.INTERACTIONS, "part-00000.csv")
  assert not filecmp.cmp(os.path.join(root, first), str(tmp_path / "other" / first),
                         shallow=False)


@pytest.mark.parametrize("interactions,items", [(2, 500), (1000, 10), (1000, 2_000_000)])
def test_out_of_range_arguments_are_refused(tmp_path, interactions, items):
  with pytest.raises(ValueError):
    synthetic_logs.write_synthetic_logs(str(tmp_path), interactions, items)


def test_growth_exponent_recovers_known_powers():
  sizes = [1e5, 1e6, 5e6]
  assert growth_exponent([(x, 3 * x ** 1.5) for x in sizes]) == pytest.approx(1.5)
  assert growth_exponent([(x, 700.0) for x in sizes]) == pytest.approx(0.0)
  assert growth_exponent([(1e5, 10.0)]) is None  # one size fits nothing


def test_exponents_and_table_skip_failed_runs():
  def run(rows, seconds, mib, status=0):
    return {"rows": rows, "pipeline": {
        "exit_status": status, "seconds": seconds, "peak_rss_mib_overall": mib,
        "component_seconds": {"Trainer": seconds / 2}, "peak_rss_mib": {"Trainer": mib}}}
  runs = [run(100, 10.0, 500), run(1000, 100.0, 500), run(10000, 5.0, 9, status=1)]
  fitted = exponents(runs)
  assert fitted["seconds"] == pytest.approx(1.0)
  assert fitted["peak_rss"] == pytest.approx(0.0)
  assert fitted["component_seconds"]["Trainer"] == pytest.approx(1.0)
  assert "Trainer" in table(runs) and "10,000 rows" in table(runs)
