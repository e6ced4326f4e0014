"""Bias benchmark loaders, prompt / preference-pair builders and the dataset catalogue.

Stdlib only (no torch / transformers): the Streamlit app imports this for dataset previews.
Loaders return (rows, LoadReport) and report malformed rows with file and line; strict=True raises
DataValidationError on the first one. Builders turn rows into group-labelled PromptExample /
PreferencePair lists with deterministic train / validation / eval splits.
"""

from engine.data.bbq import BBQExample, load_bbq
from engine.data.bold import BoldPrompt, load_bold
from engine.data.builders import build_pair_splits, build_pairs, build_prompt_splits, build_prompts, group_counts
from engine.data.catalog import dataset_kind
from engine.data.crows_pairs import CrowsPair, load_crows_pairs
from engine.data.global_opinion_qa import PAPER_COUNTRIES, GlobalOpinionRow, load_global_opinion_qa
from engine.data.holistic_bias import HolisticBiasSentence, load_holistic_bias
from engine.data.registry import DATASETS, DatasetSpec, catalog, load_named, preview
from engine.data.splits import SPLITS, split_examples
from engine.data.stereoset import StereoSetItem, load_stereoset
from engine.data.types import DatasetUnavailableError, DataValidationError, LoadReport, PreferencePair, PromptExample

__all__ = [
    "DATASETS",
    "PAPER_COUNTRIES",
    "SPLITS",
    "BBQExample",
    "BoldPrompt",
    "CrowsPair",
    "DataValidationError",
    "DatasetSpec",
    "DatasetUnavailableError",
    "GlobalOpinionRow",
    "HolisticBiasSentence",
    "LoadReport",
    "PreferencePair",
    "PromptExample",
    "StereoSetItem",
    "build_pair_splits",
    "build_pairs",
    "build_prompt_splits",
    "build_prompts",
    "catalog",
    "dataset_kind",
    "group_counts",
    "load_bbq",
    "load_bold",
    "load_crows_pairs",
    "load_global_opinion_qa",
    "load_holistic_bias",
    "load_named",
    "load_stereoset",
    "preview",
    "split_examples",
]
