"""Generation with megatron-core's KV cache: cached == recompute-everything greedy output, the
same continuations at TP=1, TP=2 and PP=2 from one checkpoint (tools/generate.py), sampling
controls, stop strings, and the model-based downstream evaluations (translation, qa,
representation, zs-clt) giving the same numbers at every layout."""

import json
import os

import numpy as np
import pytest
import torch

from megatron_prealign.testing import pretrain_case
from tests.dist_utils import run_distributed

EVAL_SEQ = "320"  # RoPE: evaluation runs longer sequences than training (the prompts are long)


def _tiny_model(tensor_model_parallel_size=1, **overrides):
    """A small model built directly (random weights, no dropout) at the given TP size."""
    from megatron_prealign import runtime
    from megatron_prealign.generation.model_loading import LoadedModel
    from megatron_prealign.model import ModelArgs, build_model

    runtime.initialize(tensor_model_parallel_size, 1, seed=3)
    args = ModelArgs(**{**dict(vocab_size=64, seq_length=48, family="gpt2", num_layers=2, hidden_size=32,
                                num_attention_heads=4, hidden_dropout=0.0, attention_dropout=0.0,
                                init_method_std=0.2), **overrides})
    chunks = build_model(args, wrap_with_ddp=False)
    for chunk in chunks:
        chunk.eval()
    return LoadedModel(chunks, args, {}, "")


def _direct_cache_check():
    """Rank body: a gpt2-family model (learned positions) built directly; ragged prompts."""
    from megatron_prealign.generation import SamplingParams, generate

    model = _tiny_model()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 64, (n,), generator=g).tolist() for n in (5, 9, 3, 12, 7)]
    cached = generate(model, prompts, 12, batch_size=3, use_cache=True)
    recomputed = generate(model, prompts, 12, batch_size=3, use_cache=False)
    one_by_one = [generate(model, [p], 12, use_cache=True)[0] for p in prompts]
    sample = SamplingParams(greedy=False, temperature=0.8, top_p=0.9, seed=5)
    sampled = [generate(model, prompts, 12, sample, batch_size=3)[i].tokens for i in range(2)]
    again = generate(model, prompts, 12, sample, batch_size=3)[0].tokens
    other_seed = generate(model, prompts, 12, SamplingParams(greedy=False, seed=6), batch_size=3)[0].tokens
    eod = cached[0].tokens[3]
    stopped = generate(model, prompts[:1], 12, eod=eod)[0]
    # A stop string of the last two tokens of a 40-token greedy continuation, with a decode in
    # which some tokens are no text: the run must stop where the whole text first holds it.
    letters = lambda tokens: "".join("" if t % 2 == 0 else chr(97 + t % 26) for t in tokens)  # noqa: E731
    full = generate(model, prompts[:1], 40)[0].tokens
    stop = letters(full[-8:])
    at_stop = generate(model, prompts[:1], 40, stop_strings=[stop], decode=letters)[0]
    first = next(n for n in range(1, 41) if stop in letters(full[:n]))
    return {"cached": [c.tokens for c in cached], "recomputed": [r.tokens for r in recomputed],
            "one_by_one": [o.tokens for o in one_by_one], "sampled0": sampled[0], "again": again,
            "other_seed": other_seed, "eod": eod, "stopped": (stopped.tokens, stopped.stop_reason),
            "stop_string": (at_stop.tokens, at_stop.stop_reason, full[:first])}


def test_kv_cache_matches_recompute_everything():
    result = run_distributed(_direct_cache_check, 1)[0]
    assert result["cached"] == result["recomputed"]  # batched, ragged prompts, cache vs none
    assert result["cached"] == result["one_by_one"]  # batching / padding does not leak
    assert all(len(tokens) == 12 for tokens in result["cached"])
    assert result["sampled0"] == result["again"] != result["other_seed"]
    tokens, reason = result["stopped"]
    first = result["cached"][0].index(result["eod"])
    assert reason == "eod" and tokens == result["cached"][0][:first + 1]
    tokens, reason, expected = result["stop_string"]
    assert reason == "stop" and tokens == expected and len(expected) < 40


def _tp2_cache_check():
    """Rank body at TP=2: a LLaMA-family model (RoPE, grouped-query attention) whose vocabulary
    has padding rows, as every `transformers` import whose vocabulary is not a multiple of the
    padding unit has; ragged prompts, enough new tokens to cross both vocabulary shards."""
    from megatron_prealign.generation import generate

    model = _tiny_model(2, family="llama", num_query_groups=2, true_vocab_size=61)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 61, (n,), generator=g).tolist() for n in (5, 9)]
    cached = [c.tokens for c in generate(model, prompts, 10, use_cache=True)]
    recomputed = [r.tokens for r in generate(model, prompts, 10, use_cache=False)]
    return cached, recomputed


def test_kv_cache_matches_recompute_everything_at_tp2_with_padded_vocabulary():
    """Regression: the padded-vocabulary mask took the gathered logits of the cached path for a
    vocabulary shard, so TP rank 1 masked every token, the ranks fed different tokens and the
    continuation went wrong from the third token on."""
    ranks = run_distributed(_tp2_cache_check, 2)
    cached, recomputed = ranks[0]
    assert cached == recomputed
    assert ranks[1] == ranks[0]  # every TP rank chose the same tokens
    assert all(len(tokens) == 10 for tokens in cached)
    assert any(t >= 32 for tokens in cached for t in tokens)  # rank 1's vocabulary shard is used
    assert all(t < 61 for tokens in cached for t in tokens)  # never a padding row


def test_sampling_filters():
    from megatron_prealign.generation.sampling import SamplingParams, next_tokens

    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0, 1.0]] * 400)
    g = torch.Generator().manual_seed(0)
    assert next_tokens(logits, SamplingParams(), g).eq(1).all()
    top2 = next_tokens(logits, SamplingParams(greedy=False, top_k=2), g)
    assert set(top2.tolist()) == {1, 2}
    nucleus = next_tokens(logits, SamplingParams(greedy=False, top_p=0.3), g)
    assert nucleus.eq(1).all()  # token 1 alone holds > 30% of the mass
    assert next_tokens(logits, SamplingParams(), g, allowed_vocab=1).eq(0).all()
    with pytest.raises(ValueError, match="top-p"):
        SamplingParams(greedy=False, top_p=0.0).validate()


def test_completion_text_cuts_at_stop_string_and_eod():
    from megatron_prealign.generation.decoding import Generation, completion_text

    decode = lambda ids: "".join(chr(96 + i) for i in ids)  # noqa: E731
    assert completion_text(Generation([1, 2, 3, 9], "eod"), decode, 9) == "abc"
    assert completion_text(Generation([1, 2, 3, 4], "stop"), decode, 9, ["cd", "bc"]) == "a"


# -- a checkpoint at TP=2, generated / evaluated at TP=1, TP=2 and PP=2 ---------------------------


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("generation"))
    data = pretrain_case.prepare_data(os.path.join(root, "data"))
    work = os.path.join(root, "train")
    os.makedirs(work)
    argv = pretrain_case.base_argv(data, work, train_iters=2, model_family="llama", max_position_embeddings=EVAL_SEQ,
                                   tensor_model_parallel_size=2, save=os.path.join(work, "ckpt"))
    run_distributed(pretrain_case.run_pretrain, 2, argv)
    files = {}

    def write(name, lines):
        files[name] = os.path.join(root, name)
        with open(files[name], "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))

    write("prompts.jsonl", [json.dumps({"prompt": "The river"}), json.dumps({"prompt": "Money and the bank"}),
                            json.dumps({"instruction": "Say something.", "input": "The city"})])
    write("en.txt", ["The river was in the city.", "The man is new.", "The bank is near the river."])
    write("de.txt", ["Der fluss war in der stadt.", "Der mann ist neu.", "Die bank ist am fluss."])
    write("de_short.txt", ["Der fluss war in der stadt."])
    write("nli_train.jsonl", [json.dumps({"premise": "The man is new.", "hypothesis": "The man is new.", "label": 0}),
                              json.dumps({"premise": "The man is new.", "hypothesis": "The man is old.", "label": 2}),
                              json.dumps({"premise": "The river.", "hypothesis": "A city.", "label": 1})])
    write("nli_test.tsv", ["language\tgold_label\tsentence1\tsentence2",
                           "de\tentailment\tDer mann ist neu.\tDer mann ist neu.",
                           "de\tcontradiction\tDer mann ist neu.\tDer mann ist alt.",
                           "en\tneutral\tThe river.\tA city."])
    write("nli_unseen.jsonl", [json.dumps({"premise": "a", "hypothesis": "b", "label": "maybe"})])
    write("long.jsonl", [json.dumps({"prompt": " ".join(["river"] * 400)})])
    write("empty.jsonl", [])
    write("squad.en.json", [json.dumps({"data": [{"paragraphs": [{"context": "The river was in the city.", "qas": [
        {"id": "a", "question": "Where was the river?", "answers": [{"text": "in the city", "answer_start": 14}]},
        {"id": "b", "question": "What was in the city?", "answers": [{"text": "The river", "answer_start": 0}]}]}]}]})])
    return {"root": root, "data": data, "ckpt": os.path.join(work, "ckpt"), **files}


def _argvs(case, tag, layout):
    root = case["root"]
    tok = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", case["data"]["sp"]]
    common = ["--load", case["ckpt"], *layout, "--seq-length", EVAL_SEQ, *tok]
    out = lambda name: ["--output", os.path.join(root, f"{tag}_{name}")]  # noqa: E731
    return {
        "generate": ("generate", [*common, *out("gen.jsonl"), "--input", case["prompts.jsonl"],
                                  "--max-new-tokens", "6", "--batch-size", "2"]),
        "translation": ("evaluate", ["translation", *common, *out("mt.json"), "--src", case["en.txt"],
                                     "--ref", case["de.txt"], "--direction", "en-de", "--max-new-tokens", "5"]),
        "representation": ("evaluate", ["representation", *common, *out("rep.json"), "--src", case["en.txt"],
                                        "--tgt", case["de.txt"], "--tgt-lang", "de", "--micro-batch-size", "2",
                                        "--plot", os.path.join(root, f"{tag}_rep.png")]),
        # --add-bos (the id of "<s>" in the test SentencePiece) begins every sentence; pooling
        # skips it, attention does not.
        "representation bos": ("evaluate", ["representation", *common, *out("rep_bos.json"), "--src",
                                            case["en.txt"], "--tgt", case["de.txt"], "--tgt-lang", "de",
                                            "--micro-batch-size", "2", "--add-bos"]),
        "zs-clt": ("evaluate", ["zs-clt", *common, *out("nli.json"), "--train", case["nli_train.jsonl"],
                                "--test", f"de={case['nli_test.tsv']}", f"en={case['nli_test.tsv']}",
                                "--micro-batch-size", "4"]),
    }


def _bad_runs(case, tp1):
    def with_(entry, **changes):
        tool, argv = entry
        argv = list(argv)
        for flag, value in changes.items():
            flag = "--" + flag.replace("_", "-")
            argv[argv.index(flag) + 1] = value
        return tool, argv

    return {
        "bad prompt too long": with_(tp1["generate"], input=case["long.jsonl"]),
        "bad empty prompts": with_(tp1["generate"], input=case["empty.jsonl"]),
        "bad line counts": with_(tp1["translation"], ref=case["de_short.txt"]),
        "bad unknown language": with_(tp1["translation"], direction="en-xx"),
        "bad unseen label": with_(tp1["zs-clt"], train=case["nli_unseen.jsonl"]),
    }


def _rank(runs, extra_checks=False):
    from megatron_prealign.cli import evaluate as evaluate_cli
    from megatron_prealign.errors import EvaluationError
    from megatron_prealign.cli import generate as generate_cli

    results = {}
    for name, (tool, argv) in runs.items():
        module = generate_cli if tool == "generate" else evaluate_cli
        try:
            result = module.run(module.build_parser().parse_args(argv))
            if isinstance(result, dict):
                for key in ("elapsed_s", "plot", "train_records"):
                    result.pop(key, None)
            results[name] = json.dumps(result)
        except EvaluationError as error:
            results[name] = "error: " + str(error)
    if extra_checks:
        results["likelihood check"] = _likelihood_against_logits(runs["tp1 zs-clt"][1])
    return results


def _likelihood_against_logits(argv):
    """The label-word scores against a direct log-softmax of the model's logits (TP=1)."""
    from megatron_prealign.cli import evaluate as cli
    from megatron_prealign.evaluation import classification
    from megatron_prealign.generation.model_loading import load_for

    args = cli.build_parser().parse_args(argv)
    model = load_for(args)
    prefixes = [np.array([5, 6, 7, 8]), np.array([9, 10])]
    words = [np.array([11, 12]), np.array([13])]
    scores = classification.continuation_loglik(model, prefixes, words, 2)
    reference = []
    for prefix, word in zip(prefixes, words):
        seq = torch.tensor(np.concatenate([prefix, word]))[None]
        with torch.no_grad():
            logits = model.chunks[0](seq[:, :-1], torch.arange(seq.shape[1] - 1)[None], None)
        logprobs = torch.log_softmax(logits.float(), -1)[0]
        reference.append(sum(float(logprobs[len(prefix) - 1 + k, int(w)]) for k, w in enumerate(word)))
    return json.dumps([list(map(float, scores)), reference])


@pytest.fixture(scope="module")
def layouts(case):
    tp2 = _argvs(case, "tp2", ["--tensor-model-parallel-size", "2"])
    pp2 = _argvs(case, "pp2", ["--pipeline-model-parallel-size", "2"])
    on_two = run_distributed(_rank, 2, {**{f"tp2 {k}": v for k, v in tp2.items()},
                                        **{f"pp2 {k}": v for k, v in pp2.items()}})
    assert on_two[0] == on_two[1]  # every rank returns the same results
    tp1 = _argvs(case, "tp1", [])
    nocache = ("generate", tp1["generate"][1] + ["--no-kv-cache"])
    nocache[1][nocache[1].index("--output") + 1] = os.path.join(case["root"], "nocache_gen.jsonl")
    qa = ("evaluate", ["qa", *tp1["translation"][1][1:tp1["translation"][1].index("--output")],
                       "--output", os.path.join(case["root"], "tp1_qa.json"), "--input", case["squad.en.json"],
                       "--language", "en", "--max-new-tokens", "4"])
    on_one = run_distributed(_rank, 1, {**{f"tp1 {k}": v for k, v in tp1.items()}, "tp1 nocache": nocache,
                                        "tp1 qa": qa,
                                        **_bad_runs(case, tp1)}, extra_checks=True)[0]
    results = {**on_two[0], **on_one}
    return {k: (v[len("error: "):] if v.startswith("error: ") else json.loads(v)) for k, v in results.items()}


def _outputs(result):
    return [(r["output"], r["stop_reason"], r["new_tokens"]) for r in result]


@pytest.mark.slow
def test_generate_same_at_tp1_tp2_pp2_and_without_cache(case, layouts):
    reference = _outputs(layouts["tp1 generate"])
    assert len(reference) == 3 and all(n >= 1 for _, _, n in reference)
    assert _outputs(layouts["tp2 generate"]) == reference
    assert _outputs(layouts["pp2 generate"]) == reference
    assert _outputs(layouts["tp1 nocache"]) == reference
    with open(os.path.join(case["root"], "tp1_gen.jsonl")) as handle:
        written = [json.loads(line) for line in handle]
    assert _outputs(written) == reference
    assert written[2]["prompt"].startswith("Below is an instruction") and written[2]["input"] == "The city"


@pytest.mark.slow
def test_model_evaluations_same_at_every_layout(layouts):
    for name in ("translation", "zs-clt"):
        reference = {k: v for k, v in layouts[f"tp1 {name}"].items() if k not in ("checkpoint", "layout")}
        for tag in ("tp2", "pp2"):
            other = {k: v for k, v in layouts[f"{tag} {name}"].items() if k not in ("checkpoint", "layout")}
            assert json.dumps(other, sort_keys=True) == json.dumps(reference, sort_keys=True), (tag, name)
    rep = layouts["tp1 representation"]
    assert len(rep["aligned"]) == len(rep["states"]) == 3  # embedding, layer 1, final norm
    for tag in ("tp2", "pp2"):
        for name in ("representation", "representation bos"):
            for key in ("aligned", "random", "retrieval_acc@1"):
                np.testing.assert_allclose(layouts[f"{tag} {name}"][key], layouts[f"tp1 {name}"][key],
                                           atol=1e-5)
    assert not np.allclose(layouts["tp1 representation bos"]["aligned"][-1], rep["aligned"][-1], atol=1e-6)
    nli = layouts["tp1 zs-clt"]
    assert nli["label_words"] == ["entailment", "neutral", "contradiction"]
    assert nli["languages"]["de"]["examples"] == 2 and nli["languages"]["en"]["examples"] == 1
    answers = layouts["tp1 qa"]
    assert answers["questions"] == 2 and [x["id"] for x in answers["per_item"]] == ["a", "b"]
    assert 0 <= answers["f1"] <= 100 and answers["decoding"] == "greedy"
    mt = layouts["tp1 translation"]["directions"]["en-de"]
    assert mt["segments"] == 3 and "tok:13a" in mt["bleu_signature"] and mt["spbleu"].startswith("not computed")


@pytest.mark.slow
def test_label_likelihood_matches_log_softmax(layouts):
    scores, reference = json.loads(json.dumps(layouts["likelihood check"]))
    np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name, message", [
    ("bad prompt too long", "exceeds the model's sequence length"),
    ("bad empty prompts", "is empty"),
    ("bad line counts", "has 3 lines but --ref"),
    ("bad unknown language", "unknown language code 'xx'"),
    ("bad unseen label", "are not among the label words"),
])
def test_bad_input(layouts, name, message):
    assert isinstance(layouts[name], str) and message in layouts[name], layouts[name]


@pytest.mark.slow
def test_zs_clt_finetune_on_english_then_score(case):
    """The transfer variant end to end: English records -> instruction data -> the fine-tuning
    stage (from the TP=2 checkpoint) -> label-word scoring. The training labels are mostly
    'contradiction'; the fine-tuned model learns that, the prompt-only model does not know it."""
    import random

    rng = random.Random(0)
    words = "the river was in city man is new old bank near money and".split()
    sentence = lambda: " ".join(rng.choice(words) for _ in range(4)).capitalize() + "."  # noqa: E731
    train = os.path.join(case["root"], "ft_train.jsonl")
    test = os.path.join(case["root"], "ft_test.jsonl")
    with open(train, "w") as handle:
        for i in range(16):
            handle.write(json.dumps({"premise": sentence(), "hypothesis": sentence(),
                                     "label": "contradiction" if i % 8 else "entailment"}) + "\n")
    with open(test, "w") as handle:
        for _ in range(4):
            handle.write(json.dumps({"premise": sentence(), "hypothesis": sentence(), "label": "contradiction"}) + "\n")
    base = ["zs-clt", "--load", case["ckpt"], "--seq-length", "256", "--tokenizer-type", "SentencePieceTokenizer",
            "--tokenizer-model", case["data"]["sp"], "--train", train, "--test", f"de={test}"]
    out = lambda name: ["--output", os.path.join(case["root"], name)]  # noqa: E731
    finetune = ["--finetune", "--finetune-epochs", "8", "--finetune-lr", "1e-2", "--finetune-global-batch-size", "4",
                "--finetune-micro-batch-size", "4"]
    results = run_distributed(_rank, 1, {"prompt-only": ("evaluate", base + out("ft0.json")),
                                         "transfer": ("evaluate", base + out("ft1.json") + finetune)})[0]
    prompt_only, transfer = json.loads(results["prompt-only"]), json.loads(results["transfer"])
    assert prompt_only["variant"] == "prompt-only" and transfer["variant"].startswith("fine-tuned")
    assert transfer["finetuned_checkpoint"] == os.path.join(case["root"], "ft1.finetuned", "checkpoint")
    assert os.path.exists(os.path.join(transfer["finetuned_checkpoint"], "latest_checkpointed_iteration.txt"))
    assert transfer["languages"]["de"]["accuracy"] == 1.0 > prompt_only["languages"]["de"]["accuracy"]
