"""Run a TFLite model with ``ai_edge_litert``, its custom operators done in numpy.

MediaPipe's attention face mesh (``face_landmark_with_attention.tflite``)
contains three custom operators (``Landmarks2TransformMatrix``,
``TransformTensorBilinear``, ``TransformLandmarks``) that MediaPipe registers
from C++; ``ai_edge_litert``'s Python interpreter can only load custom
operators from compiled code. So the model is cut, in memory, at its custom
operators: each run of built-in operators between them becomes a model of
its own (same tensors, same weight buffers, only that slice of the operator
list; its inputs are the tensors it reads that earlier slices or custom
operators produce), run by a normal interpreter, and the custom operators
in between are numpy functions (:mod:`landmarks.mediapipe_ops`). The file
in the package stays byte for byte the one MediaPipe ships; the cut can be
kept in a cache folder (``cache_dir``), as it costs more than a second to make.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["TFLiteModel", "CustomOp"]

# A custom operator: (input arrays, its parsed flexbuffer options, output shapes) -> output arrays.
CustomOp = Callable[[Sequence[np.ndarray], dict, Sequence[tuple]], Sequence[np.ndarray]]


def _interpreter(content: bytes, num_threads: int | None):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=content, num_threads=num_threads)
    it.allocate_tensors()
    return it


class TFLiteModel:
    """A TFLite model (first subgraph) whose custom operators are numpy functions.

    Args:
        content: the ``.tflite`` file's bytes.
        custom_ops: custom code (e.g. ``"TransformLandmarks"``) -> numpy implementation.
        num_threads: threads per interpreter (None: the runtime's default).
        cache_dir: where the cut of a model with custom operators is kept between processes
            (None: cut it every time). Cutting unpacks and repacks the whole flatbuffer once per
            slice, 1.3 s for the face mesh on the 2-core machine; reading the cut back takes
            milliseconds. The cut is keyed by the model's SHA-256 and each slice is checked
            against its recorded SHA-256 when read; a damaged or unreadable cut is made again.

    Call :meth:`run` with the model's input arrays; it returns the outputs in
    the model's output order (float32 arrays of the shapes the model declares).
    A model without custom operators runs as one interpreter, unchanged.
    """

    def __init__(self, content: bytes, custom_ops: Mapping[str, CustomOp] | None = None,
                 num_threads: int | None = None, cache_dir: str | os.PathLike | None = None):
        from ai_edge_litert import schema_py_generated as schema
        custom_ops = dict(custom_ops or {})
        # The flatbuffer's lazy accessors tell whether any operator is custom; unpacking the whole
        # model into Python objects (0.15-0.3 s a model) is only needed to cut it.
        lazy = schema.Model.GetRootAs(content, 0)
        if not any(lazy.OperatorCodes(i).CustomCode() for i in range(lazy.OperatorCodesLength())):
            it = _interpreter(content, num_threads)
            self.inputs = [int(d["index"]) for d in it.get_input_details()]
            self.outputs = [int(d["index"]) for d in it.get_output_details()]
            self.output_shapes = [tuple(int(x) for x in d["shape"]) for d in it.get_output_details()]
            self._steps = [("model", it, self.inputs, self.outputs)]
            return
        folder = None
        if cache_dir is not None:
            key = hashlib.sha256(content).hexdigest()[:16]
            folder = Path(cache_dir) / f"tflite-cut-{_CUT_FORMAT}-{key}"
        plan = _read_cut(folder) if folder is not None else None
        if plan is None:
            plan = _cut(content)
            if folder is not None:
                _write_cut(folder, plan)
        missing = sorted({s["code"] for s in plan["steps"] if s["kind"] == "custom"} - set(custom_ops))
        if missing:
            raise ValueError(f"the model needs custom operators with no implementation given: {missing}")
        self.inputs, self.outputs = plan["inputs"], plan["outputs"]
        self.output_shapes = [tuple(s) for s in plan["output_shapes"]]
        from flatbuffers import flexbuffers
        self._steps = []
        for step in plan["steps"]:
            if step["kind"] == "model":
                self._steps.append(("model", _interpreter(step["content"], num_threads), step["ins"], step["outs"]))
            else:
                options = flexbuffers.Loads(step["options"]) if step["options"] is not None else {}
                self._steps.append(("custom", (custom_ops[step["code"]], options, [tuple(s) for s in step["shapes"]]),
                                    step["ins"], step["outs"]))

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """The model's outputs for ``inputs`` (in the model's input order, shapes as the model declares)."""
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} inputs, got {len(inputs)}")
        values = {t: np.ascontiguousarray(x, np.float32) for t, x in zip(self.inputs, inputs)}
        for kind, what, ins, outs in self._steps:
            if kind == "model":
                for detail in what.get_input_details():
                    what.set_tensor(detail["index"], values[detail["index"]])
                what.invoke()
                for t in outs:
                    values[t] = what.get_tensor(t)
            else:
                fn, options, shapes = what
                for t, y in zip(outs, fn([values[t] for t in ins], options, shapes)):
                    values[t] = np.asarray(y, np.float32)
        return [values[t] for t in self.outputs]


# Bump when the cut's layout on disk changes: older cuts are then ignored, not misread.
_CUT_FORMAT = "v1"


def _cut(content: bytes) -> dict:
    """The model cut at its custom operators: runs of built-in operators as models of their own.

    Returns ``{"inputs", "outputs", "output_shapes", "steps"}``; a step is
    ``{"kind": "model", "content": bytes, "ins", "outs"}`` or
    ``{"kind": "custom", "code", "options": bytes | None, "shapes", "ins", "outs"}`` (tensor indices
    of the whole model).
    """
    from ai_edge_litert import schema_py_generated as schema
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]
    codes = [c.customCode.decode() if c.customCode else None for c in model.operatorCodes]
    outputs = [int(i) for i in graph.outputs]
    plan = {"inputs": [int(i) for i in graph.inputs], "outputs": outputs,
            "output_shapes": [[int(d) for d in graph.tensors[i].shape] for i in outputs], "steps": []}
    ops = graph.operators
    custom_at = [k for k, op in enumerate(ops) if codes[op.opcodeIndex] is not None]
    # Tensors that must survive a slice: read by a later operator or a model output.
    needed_after: list[set[int]] = [set() for _ in ops]
    later = set(outputs)
    for k in range(len(ops) - 1, -1, -1):
        needed_after[k] = set(later)
        later |= {int(t) for t in ops[k].inputs if t >= 0}
    constant = {t for t, ten in enumerate(graph.tensors)
                if ten.buffer > 0 and model.buffers[ten.buffer].data is not None
                and len(model.buffers[ten.buffer].data) > 0}
    start = 0
    for k in custom_at + [len(ops)]:
        if k > start:   # built-in operators start..k-1 as a model of their own
            part = ops[start:k]
            made = {int(t) for op in part for t in op.outputs}
            read = [int(t) for op in part for t in op.inputs if t >= 0]
            ins = sorted({t for t in read if t not in made and t not in constant})
            outs = sorted(t for t in made if t in needed_after[k - 1])
            plan["steps"].append({"kind": "model", "content": _slice(model, part, ins, outs), "ins": ins, "outs": outs})
        if k < len(ops):
            op = ops[k]
            outs = [int(t) for t in op.outputs]
            plan["steps"].append({
                "kind": "custom", "code": codes[op.opcodeIndex],
                "options": bytes(op.customOptions) if op.customOptions is not None else None,
                "shapes": [[int(d) for d in graph.tensors[t].shape] for t in outs],
                "ins": [int(t) for t in op.inputs], "outs": outs})
        start = k + 1
    return plan


def _slice(model, part, ins: list[int], outs: list[int]) -> bytes:
    """The model with only the operators ``part``, reading ``ins`` and giving ``outs``, as bytes."""
    import copy

    import flatbuffers
    sub = copy.copy(model.subgraphs[0])
    sub.operators, sub.inputs, sub.outputs = list(part), np.array(ins, np.int32), np.array(outs, np.int32)
    piece = copy.copy(model)
    piece.subgraphs = [sub]
    piece.signatureDefs = None   # they name the whole model's inputs and outputs
    piece.metadata = None
    builder = flatbuffers.Builder(len(model.buffers) * 64 + 4096)
    builder.Finish(piece.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _read_cut(folder: Path) -> dict | None:
    """The cut kept in ``folder``, or None when there is none or any part of it does not check out."""
    try:
        plan = json.loads((folder / "cut.json").read_text())
        for step in plan["steps"]:
            if step["kind"] == "model":
                content = (folder / step.pop("file")).read_bytes()
                if hashlib.sha256(content).hexdigest() != step.pop("sha256"):
                    return None
                step["content"] = content
            else:
                step["options"] = bytes.fromhex(step["options"]) if step["options"] is not None else None
        return plan
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_cut(folder: Path, plan: dict) -> None:
    """Keep ``plan`` in ``folder``: written whole into a temporary folder, then renamed into place,
    so a reader never sees half a cut. A cache that cannot be written only costs the next process
    the cut again."""
    import shutil
    import tempfile
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError:
        return
    try:
        steps = []
        for n, step in enumerate(plan["steps"]):
            if step["kind"] == "model":
                name = f"slice-{n}.tflite"
                (tmp / name).write_bytes(step["content"])
                steps.append({"kind": "model", "file": name, "sha256": hashlib.sha256(step["content"]).hexdigest(),
                              "ins": step["ins"], "outs": step["outs"]})
            else:
                steps.append({**step, "options": step["options"].hex() if step["options"] is not None else None})
        (tmp / "cut.json").write_text(json.dumps({**plan, "steps": steps}))
        os.replace(tmp, folder)   # a folder already there (another process's cut) makes this fail: fine
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
