"""Whether ONNX Runtime's uint8 x int8 integer GEMM is exact on this CPU.

ORT's CPU kernels (MLAS) multiply uint8 activations by int8 weights with the same int16-pair
instruction as fbgemm on x86 CPUs without VNNI, so ``MatMulInteger`` / ``DynamicQuantizeLinear``
models (slimkit's dynamic int8 export) lose accuracy there when activations use the upper half of
the uint8 range; ORT documents ``reduce_range`` or uint8 weights as the remedy. An exported file
does not know where it will run, so slimkit exports the fast VNNI layout and names this probe's
result wherever it compares ORT with torch (tests, :class:`~slimkit.export.OrtModel` notes).
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["ort_u8s8_exact"]


@functools.lru_cache(maxsize=None)
def ort_u8s8_exact() -> bool:
    """True when ORT's ``MatMulInteger`` returns the exact int32 sum for worst-case operands
    (uint8 255 x int8 127, 64 terms) on this CPU; False where it saturates (x86 without VNNI)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.UINT8, [4, 64])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])
    b = helper.make_tensor("b", TensorProto.INT8, [64, 8], np.full((64, 8), 127, np.int8).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "probe", [a], [y], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(),
                                   opts, providers=["CPUExecutionProvider"])
    out = session.run(None, {"a": np.full((4, 64), 255, np.uint8)})[0]
    return bool(np.all(out == 255 * 127 * 64))
