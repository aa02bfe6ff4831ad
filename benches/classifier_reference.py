#!/usr/bin/env python3
"""Reference runtime for the classifier latency benchmark: the same all-MiniLM-L6-v2 weights under
ONNX Runtime, plus the matrix-multiply rate of this CPU (numpy/OpenBLAS float32) for the floor.

The ONNX graph is built here from model.safetensors with the onnx helper API (no PyTorch needed):
embeddings, 6 BERT layers (erf GELU, LayerNormalization), mean pooling over the mask, L2 norm.
Prints one JSON object per line; benches/classifier.sh runs it beside `switchyard bench-classifier`.

  python classifier_reference.py --model models/all-MiniLM-L6-v2 --threads 1 --lengths 16,64 --check-text "hello"
"""
import argparse, json, os, struct, sys, threading, time


def load_safetensors(path):
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":  # e.g. position_ids buffers
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(meta["shape"])
    return out


def build_graph(weights, cfg):
    import numpy as np
    import onnx
    from onnx import helper, TensorProto, numpy_helper
    H, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    dh = H // heads
    eps = cfg["layer_norm_eps"]
    inits, nodes = [], []
    p = "" if "embeddings.word_embeddings.weight" in weights else "bert."

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, **kw))
        return outs[0]

    c = lambda name, v, dt=np.int64: init(name, np.array(v, dtype=dt))
    c("shape_heads", [0, -1, heads, dh])
    c("shape_merge", [0, -1, H])
    c("axes1", [1])
    c("one", 1.0, np.float32)
    c("big_neg", -1e9, np.float32)
    c("scale", 1.0 / np.sqrt(dh), np.float32)
    c("half", 0.5, np.float32)
    c("sqrt2", np.sqrt(2.0), np.float32)

    def ln(x, prefix, out):
        return node("LayerNormalization", [x, init(prefix + ".weight", weights[prefix + ".weight"]),
                                           init(prefix + ".bias", weights[prefix + ".bias"])], [out], axis=-1, epsilon=eps)

    def linear(x, prefix, out):
        w = init(prefix + ".wT", weights[prefix + ".weight"].T)
        b = init(prefix + ".bias", weights[prefix + ".bias"])
        m = node("MatMul", [x, w], [out + "_mm"])
        return node("Add", [m, b], [out])

    # Embeddings: word + position (0..L) + token type 0.
    e = p + "embeddings."
    word = node("Gather", [init("word", weights[e + "word_embeddings.weight"]), "input_ids"], ["emb_word"])
    node("Shape", ["input_ids"], ["seq_len"], start=1, end=2)
    c("zero_i", [0])
    c("axes0", [0])
    pos = node("Slice", [init("pos", weights[e + "position_embeddings.weight"]), "zero_i", "seq_len", "axes0"], ["emb_pos"])
    tt = init("tt0", weights[e + "token_type_embeddings.weight"][0])
    x = node("Add", [word, pos], ["emb_a"])
    x = node("Add", [x, tt], ["emb_b"])
    x = ln(x, e + "LayerNorm", "h0")
    # Additive mask [B,1,1,L]: 0 where attended, -1e9 where padding.
    node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT)
    node("Unsqueeze", ["mask_f", "axes1"], ["mask_u1"])
    node("Unsqueeze", ["mask_u1", "axes1"], ["mask_u"])
    node("Sub", ["one", "mask_u"], ["mask_inv"])
    node("Mul", ["mask_inv", "big_neg"], ["mask_add"])
    for i in range(layers):
        L = f"{p}encoder.layer.{i}."
        q = linear(x, L + "attention.self.query", f"q{i}")
        k = linear(x, L + "attention.self.key", f"k{i}")
        v = linear(x, L + "attention.self.value", f"v{i}")
        qh = node("Transpose", [node("Reshape", [q, "shape_heads"], [f"qr{i}"])], [f"qt{i}"], perm=[0, 2, 1, 3])
        kh = node("Transpose", [node("Reshape", [k, "shape_heads"], [f"kr{i}"])], [f"kt{i}"], perm=[0, 2, 3, 1])
        vh = node("Transpose", [node("Reshape", [v, "shape_heads"], [f"vr{i}"])], [f"vt{i}"], perm=[0, 2, 1, 3])
        s = node("MatMul", [qh, kh], [f"s{i}"])
        s = node("Mul", [s, "scale"], [f"ss{i}"])
        s = node("Add", [s, "mask_add"], [f"sm{i}"])
        a = node("Softmax", [s], [f"a{i}"], axis=-1)
        ctx = node("MatMul", [a, vh], [f"ctx{i}"])
        ctx = node("Transpose", [ctx], [f"ctxt{i}"], perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "shape_merge"], [f"ctxm{i}"])
        o = linear(ctx, L + "attention.output.dense", f"o{i}")
        o = node("Add", [o, x], [f"or{i}"])
        x1 = ln(o, L + "attention.output.LayerNorm", f"x1_{i}")
        f = linear(x1, L + "intermediate.dense", f"f{i}")
        g = node("Div", [f, "sqrt2"], [f"gd{i}"])
        g = node("Erf", [g], [f"ge{i}"])
        g = node("Add", [g, "one"], [f"ga{i}"])
        g = node("Mul", [f, g], [f"gm{i}"])
        g = node("Mul", [g, "half"], [f"gh{i}"])
        f2 = linear(g, L + "output.dense", f"f2{i}")
        f2 = node("Add", [f2, x1], [f"fr{i}"])
        x = ln(f2, L + "output.LayerNorm", f"h{i + 1}")
    # Mean pooling over the mask, then L2 normalisation.
    c("axes2", [2])
    node("Unsqueeze", ["mask_f", "axes2"], ["mask_e"])
    node("Mul", [x, "mask_e"], ["masked"])
    node("ReduceSum", ["masked", "axes1"], ["summed"], keepdims=0)
    node("ReduceSum", ["mask_e", "axes1"], ["count"], keepdims=0)
    node("Div", ["summed", "count"], ["mean"])
    node("LpNormalization", ["mean"], ["embedding"], axis=-1, p=2)
    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "L"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "L"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", H])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def session(model_bytes, threads):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, o, providers=["CPUExecutionProvider"])


def matmul_rate(threads):
    """GFLOP/s of numpy float32 matmul (OpenBLAS) on 1024x1024 with `threads` threads."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    b = a.T.copy()
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 1024 ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lengths", default="16,64,128,256,512")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--check-ids", help="JSON list of token id lists: print their embeddings and exit")
    ap.add_argument("--rate", action="store_true", help="print the matmul rate and exit")
    a = ap.parse_args()
    if a.rate:
        print(json.dumps({"runtime": "numpy", "threads": a.threads, "matmul_gflops": round(matmul_rate(a.threads), 1)}))
        return
    import numpy as np
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    model = build_graph(load_safetensors(os.path.join(a.model, "model.safetensors")), cfg).SerializeToString()
    sess = session(model, a.threads)
    if a.check_ids:
        for ids in json.loads(a.check_ids):
            x = np.array([ids], dtype=np.int64)
            e = sess.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0][0]
            print(json.dumps([round(float(v), 6) for v in e]))
        return
    for n in [int(x) for x in a.lengths.split(",")]:
        ids = np.array([[101] + [1000 + (i * 37) % 20000 for i in range(n - 2)] + [102]], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        for _ in range(5):
            sess.run(None, feed)
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        # Concurrent clients, one request each at a time, on the same session.
        count = [0]
        stop = time.perf_counter() + a.seconds
        lock = threading.Lock()

        def client():
            while time.perf_counter() < stop:
                sess.run(None, feed)
                with lock:
                    count[0] += 1
        started = time.perf_counter()
        ts = [threading.Thread(target=client) for _ in range(a.concurrency)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        rps = count[0] / (time.perf_counter() - started)
        print(json.dumps({"runtime": "onnxruntime", "threads": a.threads, "tokens": n,
                          "p50_ms": round(times[len(times) // 2], 3),
                          "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
                          "concurrency": a.concurrency, "requests_per_s": round(rps, 1)}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
