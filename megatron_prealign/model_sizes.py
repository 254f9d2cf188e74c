"""Named model sizes and families: plain data, apart from model.py (torch, megatron-core) so that
the training command line (`--model-size`, `--model-family` choices) parses without them."""

# The paper's sizes (GPT-2 style; 12 * layers * hidden^2 non-embedding parameters) and a
# larger one for cluster runs. 150M is the paper's default: 12 layers x 1024 hidden.
MODEL_SIZES = {
    "150M": dict(num_layers=12, hidden_size=1024, num_attention_heads=16),
    "400M": dict(num_layers=24, hidden_size=1152, num_attention_heads=18),
    "1.3B": dict(num_layers=24, hidden_size=2048, num_attention_heads=16),
    "2.7B": dict(num_layers=32, hidden_size=2560, num_attention_heads=32),
}

FAMILIES = ("gpt2", "llama")
