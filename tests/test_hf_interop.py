"""Hugging Face interop (tools/convert_checkpoint.py, megatron_prealign/hf/), checked against
`transformers` itself on tiny random models built from configs (nothing downloaded):

- import at TP=1, TP=2, PP=2 and TP=2 x PP=2 (one 4-rank gloo run): logits equal to the
  transformers model's (fp32, max abs difference <= 1e-4), padded vocabulary rows masked;
- export of the TP=2 x PP=2 checkpoints: the transformers state dict bit-equal to the original,
  greedy generations equal (megatron_prealign.generation, recompute mode);
- a checkpoint trained by this project's driver (pre-alignment + pretraining), exported with its
  tokenizer: transformers' perplexity equals this project's (1e-4 relative);
- tokenizers (SentencePiece, byte-level BPE) encode as in training; bad input fails before writing.
"""

import json
import os
import shutil

import pytest
import torch

from megatron_prealign.testing import pretrain_case
from tests.dist_utils import run_distributed

transformers = pytest.importorskip("transformers")

VOCAB, SEQ, NEW_TOKENS = 250, 24, 6
# (TP, PP) -> families imported there: every family at TP=2 x PP=2, one at each other layout.
LAYOUTS = {(1, 1): ("llama",), (2, 1): ("gpt2",), (1, 2): ("mistral",),
           (2, 2): ("llama", "mistral", "gpt2")}


def _tiny_models():
    """name -> (config, architecture class). Sizes divisible by TP=2 and PP=2."""
    return {
        # GQA (4 heads, 2 key/value heads), untied embeddings, non-default theta and eps
        "llama": (transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rope_theta=50000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
            transformers.LlamaForCausalLM),
        # sliding window narrower than the test sequence, so the window is exercised
        "mistral": (transformers.MistralConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            sliding_window=8, rms_norm_eps=1e-6, tie_word_embeddings=False),
            transformers.MistralForCausalLM),
        "gpt2": (transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64),
                 transformers.GPT2LMHeadModel),
    }


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_models")
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    models = {}
    for name, (config, cls) in _tiny_models().items():
        model = cls(config).eval()
        with torch.no_grad():  # larger weights than the 0.02 init: logits far from uniform
            for param in model.parameters():
                if param.dim() == 2:
                    param.normal_(0, 0.2)
        model.save_pretrained(root / name)
        with torch.no_grad():
            logits = model(tokens).logits
            generated = model.generate(tokens[:1, :8], max_new_tokens=NEW_TOKENS, do_sample=False,
                                       min_new_tokens=NEW_TOKENS, pad_token_id=0)
        models[name] = dict(dir=str(root / name), model=model, logits=logits, generated=generated)
    return dict(root=root, tokens=tokens, models=models)


def _full_logits(loaded, tokens):
    """[b, s, padded vocab] logits of this project's model on every rank (TP gathered, PP
    broadcast from the last stage)."""
    from megatron.core import tensor_parallel

    from megatron_prealign.generation import model_loading

    def factory(batch):
        def loss_func(logits):
            full = tensor_parallel.gather_from_tensor_model_parallel_region(logits.float())
            return full.sum() * 0, torch.tensor(1, dtype=torch.int), {"logits": full}
        return loss_func

    n, s = tokens.shape
    batch = {"tokens": tokens, "position_ids": torch.arange(s).expand(n, s).contiguous()}
    outputs = model_loading._run(loaded, [batch], factory)
    result = outputs[0]["logits"] if outputs else None
    return model_loading._broadcast_from_last_stage(result, (n, s, loaded.vocab_size), torch.float32)


def _greedy(loaded, prompt, new_tokens):
    """This project's greedy generation with megatron-core's KV cache (use_cache=True) and
    recomputing every position each step (use_cache=False): prompt + continuation for each."""
    from megatron_prealign.generation.decoding import generate

    return {mode: torch.cat([prompt, torch.tensor([generate(loaded, [prompt[0].tolist()], new_tokens,
                                                            use_cache=use_cache)[0].tokens])], dim=1)
            for mode, use_cache in (("cached", True), ("recomputed", False))}


def _import_all_layouts(hf_dirs, tokens, out_root):
    import torch.distributed as dist

    from megatron_prealign.generation.model_loading import load_model
    from megatron_prealign.hf.convert import import_hf

    results = {}
    for (tp, pp), names in LAYOUTS.items():
        for name in names:
            hf_dir = hf_dirs[name]
            save = os.path.join(out_root, f"{name}_tp{tp}_pp{pp}")
            import_hf(hf_dir, save, tp, pp, progress=False)
            loaded = load_model(save, tp, pp, seq_length=SEQ)
            results[(name, tp, pp)] = {"logits": _full_logits(loaded, tokens)}
            if (tp, pp) == (2, 2):
                results[(name, tp, pp)]["generated"] = _greedy(loaded, tokens[:1, :8], NEW_TOKENS)
            dist.barrier()
    return results if dist.get_rank() == 0 else None


def _export(checkpoints, outs):
    from megatron_prealign.cli import convert_checkpoint

    for load, out in zip(checkpoints, outs):
        assert convert_checkpoint.main(["export-hf", "--load", load, "--out", out, "--no-progress"]) == 0


def test_import_logits_export_round_trip_and_greedy(hf_models, tmp_path):
    tokens = hf_models["tokens"]
    dirs = {name: m["dir"] for name, m in hf_models["models"].items()}
    results = run_distributed(_import_all_layouts, 4, dirs, tokens, str(tmp_path), timeout=600)[0]
    assert len(results) == sum(len(names) for names in LAYOUTS.values())
    for (name, tp, pp), result in results.items():
        reference = hf_models["models"][name]["logits"]
        logits = result["logits"]
        assert logits.shape[-1] == 256  # 250 padded to a multiple of 128 x TP
        difference = (logits[..., :VOCAB] - reference).abs().max().item()
        assert difference <= 1e-4, f"{name} at TP={tp} PP={pp}: max |logit difference| {difference}"
        assert (logits[..., VOCAB:] == torch.finfo(torch.float32).min).all(), "padded rows not masked"
        if "generated" in result:
            for mode, generated in result["generated"].items():
                assert torch.equal(generated, hf_models["models"][name]["generated"]), (name, mode)

    outs = [str(tmp_path / f"{name}_hf") for name in dirs]
    run_distributed(_export, 1, [str(tmp_path / f"{name}_tp2_pp2") for name in dirs], outs)
    for name, out in zip(dirs, outs):
        assert {"config.json", "generation_config.json", "model.safetensors.index.json"} <= set(os.listdir(out))
        assert not os.path.exists(tmp_path / f".{name}_hf.incomplete")
        original = hf_models["models"][name]["model"]
        exported = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        assert type(exported) is type(original)
        ours, theirs = exported.state_dict(), original.state_dict()
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
        for field in ("rope_parameters", "sliding_window", "rms_norm_eps", "num_key_value_heads",
                      "tie_word_embeddings", "activation_function", "n_inner"):
            assert getattr(exported.config, field, None) == getattr(original.config, field, None), field


def _train_export_perplexity(data, work, text_ids):
    from megatron_prealign import pretrain
    from megatron_prealign.generation.model_loading import load_model, sequence_nll
    from megatron_prealign.hf.convert import export_hf

    ckpt = os.path.join(work, "ckpt")
    argv = pretrain_case.base_argv(data, work, train_iters=2, prealign_iters=2, save=ckpt,
                                   hidden_dropout=0.0, attention_dropout=0.0,
                                   **pretrain_case.alignment_flags(data))
    assert pretrain.main(argv) == 0
    out = os.path.join(work, "hf")
    export_hf(ckpt, out, {"tokenizer_type": "SentencePieceTokenizer", "tokenizer_model": data["sp"]},
              progress=False)
    loaded = load_model(ckpt, 1, 1)
    ids = torch.tensor([text_ids])
    nll = sequence_nll(loaded, ids[:, :-1], ids[:, 1:], torch.ones(1, ids.shape[1] - 1))
    return float(torch.exp(nll[0, 0] / nll[0, 1]))


@pytest.mark.slow
def test_prealign_checkpoint_exports_with_tokenizer_and_same_perplexity(tmp_path):
    from megatron_prealign.data.tokenizer import build_tokenizer

    data = pretrain_case.prepare_data(str(tmp_path / "data"))
    text = "the old dog sees a red ball near the river. Der Hund sieht einen roten Ball."
    ids = list(build_tokenizer("SentencePieceTokenizer", data["sp"]).tokenize(text))[:32]
    ours = run_distributed(_train_export_perplexity, 1, data, str(tmp_path), ids)[0]
    out = tmp_path / "hf"
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer.encode(text)[:32] == ids  # encodes as training did
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = torch.exp(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss).item()
    assert abs(theirs - ours) / ours <= 1e-4, (theirs, ours)


@pytest.mark.parametrize("kind", ["sp", "hf"])
def test_tokenizer_export_encodes_as_training(assets, kind, tmp_path):
    from megatron_prealign.data.tokenizer import build_tokenizer
    from megatron_prealign.hf.tokenizer import check_tokenizer

    kinds = {"sp": "SentencePieceTokenizer", "hf": "HuggingFaceTokenizer"}
    exported = check_tokenizer({"tokenizer_type": kinds[kind], "tokenizer_model": assets[kind]}, 10**6)
    exported.save_pretrained(tmp_path)
    assert "tokenizer.json" in os.listdir(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    training = build_tokenizer(kinds[kind], assets[kind])
    lines = [json.loads(line)["text"] for name in ("en", "de", "zh") for line in open(assets[name])][::40]
    assert lines and all(reloaded.encode(t) == list(training.tokenize(t)) for t in lines)


def test_bad_input_fails_before_writing(hf_models, tmp_path):
    from megatron_prealign.hf.convert import plan_import
    from megatron_prealign.cli import convert_checkpoint

    llama = hf_models["models"]["llama"]["dir"]

    def variant(name, edit_config=None, shard=False):
        target = tmp_path / name
        if shard:
            hf_models["models"]["llama"]["model"].save_pretrained(target, max_shard_size="40KB")
        else:
            shutil.copytree(llama, target)
        if edit_config:
            config = json.load(open(target / "config.json"))
            edit_config(config)
            json.dump(config, open(target / "config.json", "w"))
        return str(target)

    cases = {
        "unsupported architecture": (variant("bert", lambda c: c.update(
            architectures=["BertForMaskedLM"], model_type="bert")), 1, "unsupported architecture"),
        "shape mismatch": (variant("shapes", lambda c: c.update(intermediate_size=128)), 1,
                           "disagrees with the weights"),
        "rope type": (variant("yarn", lambda c: c.update(rope_parameters={
            "rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4})), 1, "RoPE type 'yarn'"),
        "tp does not divide kv heads": (llama, 4, "does not divide the 2 key/value heads"),
    }
    missing = variant("sharded", shard=True)
    index = json.load(open(os.path.join(missing, "model.safetensors.index.json")))
    assert len(set(index["weight_map"].values())) > 1
    plan_import(missing, 2, 2)  # complete shards: accepted
    os.remove(os.path.join(missing, sorted(set(index["weight_map"].values()))[-1]))
    cases["missing shard"] = (missing, 1, "are missing")
    for case, (hf_dir, tp, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            plan_import(hf_dir, tp, 1)
        save = tmp_path / f"out_{case.replace(' ', '_')}"
        argv = ["import-hf", "--hf-dir", hf_dir, "--save", str(save), "--tensor-model-parallel-size", str(tp)]
        assert convert_checkpoint.main(argv) == 2, case
        assert not save.exists() and not (tmp_path / f".{save.name}.incomplete").exists(), case
    existing = tmp_path / "existing"
    existing.mkdir()
    assert convert_checkpoint.main(["import-hf", "--hf-dir", llama, "--save", str(existing)]) == 2
    assert convert_checkpoint.main(["export-hf", "--load", str(tmp_path / "nothing"), "--out",
                                    str(tmp_path / "x")]) == 2
