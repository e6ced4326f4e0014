"""A tiny randomly initialised Llama model for fast tests.

It uses the real SmolLM2 tokenizer (vocabulary + chat template), so prompts go through the same chat path as
the default model. head_dim is 64 because vLLM's CPU attention refuses smaller heads.
"""

from __future__ import annotations

from pathlib import Path

from engine.models.default_model import default_tokenizer_path

def make_tiny_model(
    path: Path,
    *,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 128,
    heads: int = 2,
    head_dim: int = 64,
    init_std: float = 0.2,
    max_positions: int = 1024,
) -> Path:
    """Build a random Llama causal LM with the SmolLM2 tokenizer and save it as an HF folder at `path`.

    `init_std` is larger than the usual 0.02 on purpose: near-uniform next-token distributions make greedy
    decoding a coin toss between near-tied logits, so backends (HF vs vLLM) could disagree on rounding alone.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    if head_dim < 64:
        raise ValueError(f"head_dim={head_dim} is too small: vLLM's CPU attention needs head_dim >= 64")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok_dir = default_tokenizer_path()
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    # Seed a private generator state so building a model does not disturb the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path

