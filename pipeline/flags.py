"""The pipeline's command-line flags, shared by every runner (local, Kubeflow), and the config
they name. Imports nothing heavy, so `--help` answers at once.

Flags after a lone `--` go to every Beam component (Beam's flags start with `--` themselves, so
argparse could not take them as values).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import List

from pipeline.config import CrossEncoderStage, PipelineConfig, RankingStage
from pipeline.data.contract import parse_scale
from transform.features import EVAL_SPLITS, HISTORY_SCOPES, PAIRED_EVAL_SPLIT


def _stage_switch(parser: argparse.ArgumentParser, stage: str, what: str, in_demo: bool) -> None:
  """--STAGE / --no_STAGE; neither leaves the default (on with --movielens where `in_demo`,
  else off)."""
  default = "on with --movielens, else off" if in_demo else "off"
  parser.add_argument(f"--{stage}", dest=stage, action="store_const", const=True, default=None,
                      help=f"add {what} (default: {default})")
  parser.add_argument(f"--no_{stage}", dest=stage, action="store_const", const=False,
                      help=f"leave {what} out, also with --movielens")


def _scale(text: str):
  try:
    return parse_scale(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _at_least_zero(kind: type):
  """An argparse type: a number of `kind` that is >= 0."""
  def parse(text: str):
    value = kind(text)
    if value < 0:
      raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value
  parse.__name__ = kind.__name__  # argparse names the type in its error
  return parse


_COUNT, _AMOUNT = _at_least_zero(int), _at_least_zero(float)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
  """The flags of the pipeline itself, the same for every runner."""
  defaults = PipelineConfig(data_root="")
  parser.add_argument("--pipeline_name", default=defaults.pipeline_name,
                      help="names the MLMD contexts and the pipeline root's folder")
  parser.add_argument("--schema_path", default=None,
                      help="curated schema (schema.pbtxt) to validate against; default "
                           "pipeline/schema/retrieval_schema.pbtxt")
  parser.add_argument("--rating_scale", type=_scale, default=None, metavar="MIN,MAX",
                      help="the scale ratings are validated against, e.g. 1,5 or 0,10 (default: "
                           "the schema's, 0.5,5 in the curated one: MovieLens' half stars)")
  parser.add_argument("--invalid_rows", choices=("halt", "skip"), default=defaults.invalid_rows,
                      help="bad rows (every one is reported, with file, line and column): halt "
                           "the run (default), or skip them, counted and reported")
  parser.add_argument("--max_invalid_share", type=float, default=defaults.max_invalid_share,
                      help="with --invalid_rows skip: the share of rows read that may be "
                           f"dropped; more halts the run (default {defaults.max_invalid_share})")
  parser.add_argument("--max_clock_skew_s", type=float, default=defaults.max_clock_skew_s,
                      help="a timestamp later than the run's clock plus this many seconds is a "
                           f"bad row (default {defaults.max_clock_skew_s:g}); a negative value "
                           "turns the check off")
  parser.add_argument("--span_window", type=_COUNT, default=defaults.span_window, metavar="N",
                      help="with dated span folders (interactions/span=YYYY-MM-DD/): train on "
                           "the latest N interaction spans (default 0: all)")
  parser.add_argument("--max_span_age_days", type=_AMOUNT, default=None, metavar="DAYS",
                      help="retention: ignore interaction spans more than DAYS older than the "
                           "newest (default: no limit; nothing is deleted)")
  parser.add_argument("--drift_features", default=defaults.drift_features,
                      help="comma-separated features whose newest-span distribution is "
                           "compared with the span before (TFDV L-infinity distance); '' turns "
                           f"the check off (default {defaults.drift_features})")
  parser.add_argument("--drift_threshold", type=_AMOUNT, default=defaults.drift_threshold,
                      help="the distance past which drift halts the run before training "
                           f"(default {defaults.drift_threshold})")
  parser.add_argument("--drift_min_span_rows", type=_COUNT, default=defaults.drift_min_span_rows,
                      help="spans with fewer examples are not compared (too few to judge; "
                           f"default {defaults.drift_min_span_rows})")
  parser.add_argument("--history_scope", choices=HISTORY_SCOPES, default=defaults.history_scope,
                      help="each example's history: the user's other training items (logs "
                           "whose order means nothing, the default), or items from strictly "
                           "earlier timestamps (sequences)")
  parser.add_argument("--eval_split", choices=EVAL_SPLITS, default="",
                      help=f"how each user's eval interactions are chosen; must pair with the "
                           f"history scope {PAIRED_EVAL_SPLIT}, which is the default")
  parser.add_argument("--eval_fraction", type=float, default=defaults.eval_fraction,
                      help="the fraction of each user's interactions held out for eval")
  parser.add_argument("--epochs", type=int, default=None, help="retrieval training epochs")
  parser.add_argument("--batch_size", type=int, default=None, help="retrieval training batch")
  parser.add_argument("--strategy", default=None,
                      help="retrieval distribution strategy: default, mirrored or tpu")
  parser.add_argument("--retrieval_settings", type=json.loads, default={},
                      help="more retrieval trainer settings as JSON (RetrievalSettings and "
                           "TowerConfig fields), e.g. '{\"item_bias\": true}'")
  parser.add_argument("--gate_metrics", default=None,
                      help=f"comma-separated metrics the model must win on (default "
                           f"{defaults.gate_metrics})")
  parser.add_argument("--regression_tolerance", type=float, default=None,
                      help="how far below the last blessed model a gate metric may fall "
                           f"(default {defaults.regression_tolerance})")
  ranking = RankingStage()
  parser.add_argument("--no_ranker", dest="ranker", action="store_false",
                      help="leave the recommendation ranking stage out (the item-to-item "
                           "source, the fold models, the learned ranker)")
  parser.add_argument("--ranker_folds", type=int, default=ranking.folds,
                      help="training folds held out in turn to mine the ranker's lists")
  parser.add_argument("--ranker_settings", type=json.loads, default={},
                      help="ranker trainer settings as JSON (trainer/ranker/trainer.py "
                           "RankerSettings), e.g. '{\"scorers\": [\"dcn\"]}'")
  parser.add_argument("--ranker_gate_metrics", default=ranking.gate_metrics,
                      help="comma-separated metrics the cascade must beat every single source "
                           f"on (default {ranking.gate_metrics})")
  parser.add_argument("--ranker_gate_share", type=float, default=ranking.gate_share,
                      help="share of users whose mined lists only decide the ranker's "
                           f"blessing (default {ranking.gate_share})")
  parser.add_argument("--item_to_item_settings", type=json.loads, default={},
                      help="item-to-item source settings as JSON (trainer/item_to_item/"
                           "model.py ItemToItemSettings), e.g. '{\"ease_lambda\": 700}'")
  _stage_switch(parser, "cross_encoder", "the BERT cross-encoder stage", in_demo=False)
  stage = CrossEncoderStage()
  parser.add_argument("--cross_encoder_scale", type=float, default=1.0,
                      help=f"query groups mined and trained on, as a multiple of the CPU demo's "
                           f"bounded sample ({stage.train_groups} train / "
                           f"{stage.validation_groups} validation / {stage.eval_groups} eval)")
  parser.add_argument("--cross_encoder_checkpoint_dir", default=None,
                      help="a Hugging Face BERT folder (config.json, vocab.txt, "
                           "model.safetensors); default all-MiniLM-L6-v2")
  parser.add_argument("--cross_encoder_layers", type=int, default=None,
                      help="keep only the checkpoint's first N layers")
  parser.add_argument("--cross_encoder_sequence_length", type=int, default=None,
                      help="tokens per (query, item text) pair; default 64")
  parser.add_argument("--cross_encoder_loss", choices=("pointwise", "listwise"), default=None,
                      help="binary cross-entropy per pair (default) or softmax per query group")
  parser.add_argument("--cross_encoder_lora_rank", type=int, default=None,
                      help="fine-tune LoRA adapters of this rank instead of every weight")
  parser.add_argument("--cross_encoder_precision", choices=("float32", "bfloat16"), default=None,
                      help="compute precision of the fine-tune (default float32)")
  parser.add_argument("--cross_encoder_gate_slices", default=None,
                      help=f"slices the cross-encoder must beat the retrieval order in (default "
                           f"{stage.gate_slices}: overall and in each query kind)")
  _stage_switch(parser, "bandit", "the bandit policy stage", in_demo=True)
  parser.add_argument("--content", action="store_true",
                      help="the multimodal item tower: embed the catalog's text and images "
                           "(pretrained encoders) and fuse them into retrieval, so items "
                           "without interactions are recommended by their content")
  parser.add_argument("--warm_start", dest="warm_start", action="store_true",
                      help="start the retriever and the ranker from the last blessed models' "
                           "weights (README: measured no better than cold on MovieLens)")
  parser.add_argument("--no_warm_start", dest="warm_start", action="store_false",
                      help="train from scratch (the default)")
  parser.add_argument("--no_cache", action="store_true",
                      help="re-run every component even where MLMD has a cached execution")


def parse_pipeline_args(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
  """Parses `argv`; what follows a lone "--" becomes `beam_pipeline_args`."""
  split = argv.index("--") if "--" in argv else len(argv)
  args = parser.parse_args(argv[:split])
  args.beam_pipeline_args = argv[split + 1:] if split < len(argv) else None
  return args


def cross_encoder_stage(args: argparse.Namespace) -> CrossEncoderStage:
  training = {name: value for name, value in {
      "checkpoint_dir": args.cross_encoder_checkpoint_dir,
      "num_layers": args.cross_encoder_layers,
      "sequence_length": args.cross_encoder_sequence_length, "loss": args.cross_encoder_loss,
      "lora_rank": args.cross_encoder_lora_rank,
      "precision": args.cross_encoder_precision}.items() if value is not None}
  stage = CrossEncoderStage(training=training).scaled(args.cross_encoder_scale)
  if args.cross_encoder_gate_slices:
    stage.gate_slices = args.cross_encoder_gate_slices
  return stage


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
  """The config the flags name; with --movielens (local runs) the bandit is on unless turned
  off; the cross-encoder is on only when asked for (its CPU fine-tune would take the demo past
  10 minutes)."""
  movielens = getattr(args, "movielens", False)
  data_root = args.data_root or os.path.join(args.output_root, "data", "movielens-100k")
  training = dict(args.retrieval_settings, **{
      k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                        "strategy": args.strategy}.items() if v is not None})
  config = PipelineConfig(data_root=data_root, output_root=args.output_root,
                          pipeline_name=args.pipeline_name, retrieval_training=training,
                          eval_fraction=args.eval_fraction, history_scope=args.history_scope,
                          eval_split=args.eval_split, enable_cache=not args.no_cache,
                          ranking=RankingStage(folds=args.ranker_folds,
                                               item_to_item=args.item_to_item_settings,
                                               training=args.ranker_settings,
                                               gate_metrics=args.ranker_gate_metrics,
                                               gate_share=args.ranker_gate_share)
                          if args.ranker else None)
  if args.schema_path:
    config.schema_path = args.schema_path
  if args.rating_scale:
    config.rating_scale = args.rating_scale
  config.invalid_rows = args.invalid_rows
  config.max_invalid_share = args.max_invalid_share
  config.max_clock_skew_s = None if args.max_clock_skew_s < 0 else args.max_clock_skew_s
  config.span_window = args.span_window
  config.max_span_age_days = args.max_span_age_days
  config.drift_features = args.drift_features
  config.drift_threshold = args.drift_threshold
  config.drift_min_span_rows = args.drift_min_span_rows
  if args.gate_metrics:
    config.gate_metrics = args.gate_metrics
  if args.regression_tolerance is not None:
    config.regression_tolerance = args.regression_tolerance
  if args.beam_pipeline_args is not None:
    config.beam_pipeline_args = args.beam_pipeline_args
  if args.cross_encoder:
    config.cross_encoder = cross_encoder_stage(args)
  config.bandit = movielens if args.bandit is None else args.bandit
  config.content = args.content
  config.warm_start = args.warm_start
  return config
