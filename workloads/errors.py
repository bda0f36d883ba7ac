"""The one error the kernels raise for bad input, so a service can map it to HTTP 4xx.

Anything else a kernel raises is a fault of ours (a 5xx). The error crosses the
pool's process boundary by pickle, so it must rebuild with its ``code``.
"""

from __future__ import annotations

from typing import Any


class InvalidInput(ValueError):
    """The caller's input (or a parameter) cannot be processed.

    ``code`` is a stable machine-readable reason, one of e.g. ``empty_input``,
    ``undecodable_image``, ``image_too_large``, ``not_pcm_wav``, ``corrupt_wav``,
    ``audio_too_long``, ``too_many_frames``, ``text_too_large``,
    ``output_too_large``, ``invalid_parameter``; the message says what is
    wrong for a human.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce would call cls(*self.args) == cls(message) and lose the code.
        return (type(self), (self.code, self.message))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

    def as_dict(self) -> dict[str, str]:
        """The JSON error body both services send."""
        return {"code": self.code, "message": self.message}
