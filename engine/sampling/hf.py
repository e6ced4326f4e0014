"""HF `generate` sampler: the fallback when vLLM is not installed.

All prompts x G go through one batched, left-padded `generate` call. It samples from the live policy module
itself, so there is nothing to sync. Log-probs, when asked for, are recorded on the device while decoding (see
`_WarpAndRecord`), with no per-token host sync beyond what `generate` does.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from engine.sampling.base import SampleBatch, check_sampling_args, encode_prompts

if TYPE_CHECKING:
    import torch

    from engine.models.loading import LoadedPolicy


_STATIC_WIDTH_BUCKET = 64
_log = logging.getLogger(__name__)


def _warp_and_record_processor(temperature: float, top_p: float, record: bool = True) -> Any:
    from transformers import LogitsProcessor, TopPLogitsWarper

    top_p_warper = TopPLogitsWarper(top_p=top_p) if top_p < 1.0 else None

    class _WarpAndRecord(LogitsProcessor):
        """Apply temperature and top-p, and remember log p(token) of each sampled token under the result.

        generate is given temperature=1 and top_p=1, so this processor is the only warper and the recorded
        distribution is exactly the one sampled from (as vLLM's processed log-probs). The sampled token of
        step t is only known at step t+1 (as the last input id), so one (B, V) log-softmax stays pending.
        Without ``record`` it only warps: the same scores, so the same samples, and no log-softmax.
        """

        def __init__(self) -> None:
            self.pending: torch.Tensor | None = None  # (B, V) log-probs of the step whose token is unknown yet
            self.steps: list[torch.Tensor] = []  # each (B,)

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            import torch

            if self.pending is not None:
                self.steps.append(self.pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
            scores = scores.float()
            if temperature != 1.0:
                scores = scores / temperature
            if top_p_warper is not None:
                scores = top_p_warper(input_ids, scores)  # masked tokens become -inf
            if record:
                self.pending = torch.log_softmax(scores, dim=-1)
            return scores

        def finish(self, sequences: torch.Tensor) -> torch.Tensor | None:
            import torch

            if not record:
                return None
            if self.pending is not None:
                self.steps.append(self.pending.gather(-1, sequences[:, -1:]).squeeze(-1))
                self.pending = None
            return torch.stack(self.steps, dim=1)  # (B, T_new)

    return _WarpAndRecord()


class HFSampler:
    """Samples with the policy's own module via `generate`.

    static_cache: use cache_implementation="static" (fixed-shape KV cache; on a GPU transformers can then
    compile the decoding step). Off by default: it pays a warm-up per new shape, which CPUs rarely win back.
    """

    def __init__(self, policy: LoadedPolicy, *, static_cache: bool = False) -> None:
        self.model = policy.model
        self.tokenizer = policy.tokenizer
        self.device = policy.device
        self.static_cache = static_cache
        self._eos_ids = self._collect_eos_ids()

    def _collect_eos_ids(self) -> list[int]:
        from engine.models.loading import unwrap_base_model

        ids: set[int] = set()
        configured = unwrap_base_model(self.model).generation_config.eos_token_id
        if configured is not None:
            ids.update([configured] if isinstance(configured, int) else configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        if not ids:
            raise ValueError("the model has no EOS token id in its generation config or tokenizer: set eos_token_id")
        return sorted(ids)

    def generate(
        self,
        prompts: list[str] | list[list[int]],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        greedy: bool = False,
        ignore_eos: bool = False,
        with_logprobs: bool = False,
    ) -> SampleBatch:
        import torch
        from transformers import GenerationConfig

        from engine.models.loading import unwrap_base_model

        check_sampling_args(n, max_new_tokens, temperature, top_p, greedy)
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        rows = [list(ids) for ids in prompt_ids for _ in range(n)]  # grouped consecutively, G per prompt
        pad_id = self.tokenizer.pad_token_id
        # ignore_eos: no stop ids at all, so generate runs to max_new_tokens and EOS is sampled like any token
        stop_ids = None if ignore_eos else self._eos_ids
        width = max(len(r) for r in rows)
        if self.static_cache:
            # a static cache (and its compiled decoding step) is shaped by prompt width + max_new_tokens: round the
            # width up so successive steps' prompts reuse one compiled graph instead of recompiling per width
            width = -(-width // _STATIC_WIDTH_BUCKET) * _STATIC_WIDTH_BUCKET
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, P)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, P)
        for i, r in enumerate(rows):
            # Left padding keeps every prompt's last token in the last column, where decoding continues.
            input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, width - len(r):] = 1
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)

        # temperature and top-p are applied by the recording processor (see _WarpAndRecord); top_k=0 because
        # transformers' global default would otherwise truncate sampling to the top 50 tokens.
        sampling = {} if greedy else {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
        gen_config = GenerationConfig(
            do_sample=not greedy,
            **sampling,
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            repetition_penalty=1.0,
            eos_token_id=stop_ids,
            pad_token_id=pad_id,
            use_cache=True,
            cache_implementation="static" if self.static_cache else None,
        )

        base = unwrap_base_model(self.model)
        was_training = self.model.training
        saved_config = base.generation_config
        # generate fills unset fields from the model's own generation config (a checkpoint may ship
        # repetition penalties or min_p); a clean config keeps the sampled distribution exactly the one above.
        base.generation_config = GenerationConfig(eos_token_id=stop_ids, pad_token_id=pad_id)
        rng = contextlib.nullcontext()
        if seed is not None:
            devices = [torch.device(self.device).index or 0] if str(self.device).startswith("cuda") else []
            rng = torch.random.fork_rng(devices=devices)
        try:
            self.model.eval()
            with rng, torch.inference_mode():
                try:
                    sequences, logprobs = self._decode(input_ids, attention_mask, gen_config, seed=seed,
                                                       greedy=greedy, temperature=temperature, top_p=top_p,
                                                       record=with_logprobs)
                except Exception as exc:  # any compile or graph-capture failure: fall back, and say so
                    if not self.static_cache:
                        raise
                    # a model or torch build that cannot compile its static-cache step must still train
                    _log.warning("static-cache generation failed (%s: %s); using the dynamic cache from now on",
                                 type(exc).__name__, exc)
                    self.static_cache = False
                    gen_config.cache_implementation = None
                    sequences, logprobs = self._decode(input_ids, attention_mask, gen_config, seed=seed,
                                                       greedy=greedy, temperature=temperature, top_p=top_p,
                                                       record=with_logprobs)
        finally:
            base.generation_config = saved_config
            self.model.train(was_training)

        new_tokens = sequences[:, width:].tolist()
        new_logprobs = logprobs.tolist() if logprobs is not None else [None] * len(new_tokens)
        eos = set() if ignore_eos else set(self._eos_ids)
        completion_ids: list[list[int]] = []
        completion_lps: list[list[float]] = []
        truncated: list[bool] = []
        for toks, lps in zip(new_tokens, new_logprobs):
            stop = next((j for j, t in enumerate(toks) if t in eos), None)
            end = len(toks) if stop is None else stop + 1  # keep EOS: the policy must learn to stop
            completion_ids.append(toks[:end])
            completion_lps.append(lps[:end] if lps is not None else None)
            truncated.append(stop is None)
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return SampleBatch(
            prompt_ids=rows,
            completion_ids=completion_ids,
            logprobs=completion_lps if with_logprobs else None,
            texts=texts,
            truncated=truncated,
            prompt_index=[i for i in range(len(prompt_ids)) for _ in range(n)],
        )

    def _decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gen_config: Any, *, seed: int | None,
                greedy: bool, temperature: float, top_p: float, record: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One generate call from the seed, with a fresh warper/recorder: (B, P + T_new) ids, (B, T_new) log-probs
        (None without ``record``)."""
        import torch

        recorder = (_warp_and_record_processor(1.0, 1.0, record) if greedy
                    else _warp_and_record_processor(temperature, top_p, record))
        if seed is not None:
            torch.manual_seed(seed)
        sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                        generation_config=gen_config, logits_processor=[recorder])
        return sequences, recorder.finish(sequences)

    def sync_weights(self, model: Any) -> None:
        # HF samples with the training module itself; re-pointing covers callers that swapped the module.
        self.model = model

    def close(self) -> None:
        pass


def build_hf_sampler(model_path: str, policy: LoadedPolicy, **opts: Any) -> HFSampler:
    """The registry's entry point (engine.sampling.base.SAMPLERS): HF samples with the policy module itself, so
    the model folder is not read again."""
    return HFSampler(policy, **opts)
