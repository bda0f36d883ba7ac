"""The pure CPU kernels both stacks call: the Twisted service and the FastAPI one.

Every public function takes and returns plain picklable values (bytes, str,
numbers, lists, dicts), imports neither Twisted nor asyncio, and depends only
on its input, so the services can run it in the shared process pool. Bad input
raises :class:`InvalidInput` with a stable ``code``; anything else is a bug.

:mod:`workloads.inbox` holds the blocking file helpers of the data_sync task, shared
by the legacy LoopingCall and the modern ``@task`` so both write the same files.
"""

from __future__ import annotations

from .audio import analyze_audio
from .errors import InvalidInput
from .faces import detect_faces, load_face_model
from .images import decode_image
from .ocr import engine_loads, init_ocr, read_text
from .text import check_text, extract_domains, extract_domains_chunk, merge_domains, split_chunks
from .threads import native_threads

__all__ = [
    "InvalidInput",
    "check_text",
    "analyze_audio",
    "decode_image",
    "detect_faces",
    "engine_loads",
    "extract_domains",
    "extract_domains_chunk",
    "init_ocr",
    "load_face_model",
    "merge_domains",
    "native_threads",
    "read_text",
    "split_chunks",
    "warm_up",
]


def warm_up() -> None:
    """Load every model in this process: the pool initializer for a worker serving all kernels."""
    load_face_model()
    init_ocr()
