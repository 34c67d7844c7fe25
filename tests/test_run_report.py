"""The run's last line: what was pushed, or why nothing was and what to do about it."""
from pipeline import pipeline_def
from pipeline.components.retrieval_evaluator import CANDIDATE, POPULARITY, blessing_decision
from pipeline.evaluation.blessing import failed_reasons
from pipeline.evaluation.report import OVERALL
from pipeline.run_report import outcome_line, report
from serving.models_config import RANKER

STAGES = (pipeline_def.RETRIEVAL_STAGE, pipeline_def.RANKER_STAGE)


def _metrics(candidate: float, popularity: float):
  return {CANDIDATE: {OVERALL: {"recall@100": candidate}},
          POPULARITY: {OVERALL: {"recall@100": popularity}}}


def _summary(**outcome):
  return {"run_id": "20261202T120000", "status": "succeeded", "seconds": 1.0,
          "summary_path": "/out/runs/20261202T120000/summary.json", "output_root": "/out",
          "log": "/out/runs/20261202T120000/pipeline.log", "cached_components": [], **outcome}


def test_a_failed_gate_comparison_says_by_how_much():
  blessed, reasons = blessing_decision(_metrics(0.30, 0.42), ["recall@100"], 0.01)
  assert not blessed
  assert failed_reasons(reasons) == [
      f"recall@100: {CANDIDATE} 0.3000 <= {POPULARITY} 0.4200: FAILED by 0.1200"]
  assert not failed_reasons(blessing_decision(_metrics(0.5, 0.42), ["recall@100"], 0.01)[1])


def test_last_line_names_every_pushed_model_and_version():
  evaluation = {"reasons": [], "metrics": _metrics(0.5, 0.42)}
  summary = _summary(evaluation=evaluation, evaluation_report="r.html", blessed=True,
                     pushed_to="/out/serving/retrieval/1700000000",
                     **{RANKER: {"evaluation": evaluation, "evaluation_report": "r.html",
                                 "blessed": True,
                                 "pushed_to": "/out/serving/ranker/1700000005"}})
  summary["cached_components"] = [pipeline_def.RANKER_STAGE.pusher_id]
  summary["page"] = "/out/runs/20261202T120000/index.html"
  text = report(summary, STAGES)
  assert text.splitlines()[-3] == f"run page (opens offline): {summary['page']}"
  assert text.splitlines()[-2] == summary["summary_path"]
  assert text.splitlines()[-1] == (
      "pushed retrieval version 1700000000 to /out/serving/retrieval, ranker version "
      "1700000005 to /out/serving/ranker (unchanged: already there)")


def test_last_line_says_which_gate_failed_by_how_much_and_what_to_do():
  _, reasons = blessing_decision(_metrics(0.30, 0.42), ["recall@100"], 0.01)
  line = outcome_line(_summary(evaluation={"reasons": reasons}, blessed=False, pushed_to=None),
                      STAGES)
  assert line.startswith("nothing pushed; retrieval not blessed (recall@100: ")
  assert "FAILED by 0.1200" in line and "--gate_metrics / --regression_tolerance" in line
  assert line.endswith("python -m pipeline.push_model --output_root /out --stage retrieval "
                       "--run_id 20261202T120000")


def test_last_line_of_a_failed_run_gives_the_cause_and_the_log():
  summary = _summary(status="failed",
                     error="DataValidationError: 2 anomalies\n  rating: out of range")
  assert report(summary, STAGES).splitlines()[-1] == (
      "nothing pushed: the run failed: DataValidationError: 2 anomalies; full log: "
      "/out/runs/20261202T120000/pipeline.log")
