"""The call protocol both backends share: how a call is encoded, settled, counted and timed.

A :class:`Call` carries the caller's pickled ``(fn, args, kwargs)`` and one
*target* that receives its outcome: an asyncio future (``run`` on the pool's
own loop), a Deferred (``defer`` on that loop), or a ``concurrent.futures``
future (``submit``, and calls from any other thread or loop). Settling checks
the target is still waiting, so a caller that cancelled first is never
answered twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import pickle
import signal
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import RemoteTraceback, SerializationError

log = logging.getLogger(__name__)
DURATION_SAMPLES = 2048
COUNTS = ("completed", "failed", "crashed", "timeouts", "cancelled", "restarts")
LOOP, DEFERRED, THREADSAFE = 0, 1, 2
_dumps, _PROTOCOL = pickle.dumps, pickle.HIGHEST_PROTOCOL


def name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


#: Callables that pickle by name alone (module and qualified name, no state), so their pickle can be kept.
_BY_NAME = (types.FunctionType, types.BuiltinFunctionType)
_FN_CACHE_SIZE = 1024
_fn_refs: dict[Any, bytes] = {}


def _fn_ref(fn: Any) -> Any:
    """What stands for ``fn`` in a call: its pickle, kept per function, for a function pickled by name
    (finding a function's module and name is most of what pickling a tiny call costs); else ``fn``."""
    if type(fn) not in _BY_NAME:
        return fn
    ref = _fn_refs.get(fn)
    if ref is None:
        ref = _dumps(fn, _PROTOCOL)
        if len(_fn_refs) >= _FN_CACHE_SIZE:
            _fn_refs.clear()
        _fn_refs[fn] = ref
    return ref


#: A ``bytes`` argument this large travels out of band (pickle protocol 5): as a buffer of its own,
#: never copied into the pickle (pickling 100 KB costs twenty times what copying it does).
OUT_OF_BAND = 64 * 1024
_NO_BUFFERS: tuple[bytes, ...] = ()


def _out_of_band(_: pickle.PickleBuffer) -> bool:
    return False  # falsy: the pickle refers to the buffer, which travels apart


def encode_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None,
                out_of_band: bool = False) -> tuple[bytes, tuple[bytes, ...]]:
    """The pickled call and its out-of-band buffers; bad timeouts and unpicklable calls are refused here,
    in the caller.

    The pickle is ``(fn or its kept pickle, args, kwargs)``; :func:`~bridge.pool.worker.run_payload`
    reads both forms. With ``out_of_band`` (a backend that can send buffers apart), each ``bytes``
    argument of :data:`OUT_OF_BAND` bytes or more is one of the buffers.
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    try:
        if out_of_band:
            for arg in args:
                if type(arg) is bytes and len(arg) >= OUT_OF_BAND:
                    return _encode_out_of_band(fn, args, kwargs)
        return _dumps((_fn_ref(fn), args, kwargs), _PROTOCOL), _NO_BUFFERS
    except Exception as exc:
        raise SerializationError(
            f"cannot send {name_of(fn)} to a worker process: {exc}. Functions must be defined at "
            "module level and arguments must be picklable."
        ) from exc


def _encode_out_of_band(fn: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> tuple[bytes, tuple[bytes, ...]]:
    large = tuple(arg for arg in args if type(arg) is bytes and len(arg) >= OUT_OF_BAND)
    wrapped = tuple(pickle.PickleBuffer(arg) if type(arg) is bytes and len(arg) >= OUT_OF_BAND else arg
                    for arg in args)
    return _dumps((_fn_ref(fn), wrapped, kwargs), 5, buffer_callback=_out_of_band), large


def decode_result(blob: bytes | bytearray) -> tuple[BaseException | None, Any]:
    """``(None, result)``, or ``(SerializationError, None)`` if the result cannot be unpickled here."""
    try:
        return None, pickle.loads(blob)
    except Exception as exc:
        return SerializationError(f"cannot unpickle the result: {exc}"), None


def decode_error(blob: bytes | bytearray) -> BaseException:
    """The worker's exception, with its formatted traceback as ``__cause__``."""
    try:
        exc, tb = pickle.loads(blob)
    except Exception as error:
        return SerializationError(f"cannot unpickle the worker's exception: {error}")
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    return exc


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class Call:
    """One call from acceptance to its outcome. ``state`` is the backend's; the target is the caller's."""

    __slots__ = ("id", "fn", "payload", "buffers", "size", "timeout", "on_start", "target", "kind", "state",
                 "started", "timer", "worker", "extra")

    def __init__(self, call_id: int, fn: Any, payload: bytes, timeout: float | None,
                 target: Any, kind: int, on_start: Callable[[], None] | None = None,
                 buffers: tuple[bytes, ...] = ()) -> None:
        self.id, self.fn, self.payload, self.timeout = call_id, fn, payload, timeout
        self.buffers = buffers  # out-of-band pickle buffers (the local backend sends them apart)
        self.size = len(payload) + sum(map(len, buffers)) if buffers else len(payload)
        self.target, self.kind, self.on_start = target, kind, on_start
        self.state = "new"
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.worker: Any = None
        self.extra: Any = None

    @property
    def name(self) -> str:
        """The function's name, for messages (computed only when one is written)."""
        return name_of(self.fn)

    def resolve(self, value: Any) -> None:
        target = self.target
        if self.kind == LOOP:
            if not target.done():
                target.set_result(value)
        elif self.kind == DEFERRED:
            if not target.called:
                target.callback(value)
        else:
            try:
                target.set_result(value)
            except concurrent.futures.InvalidStateError:
                pass  # the caller cancelled first

    def reject(self, error: BaseException) -> None:
        target = self.target
        if self.kind == LOOP:
            if not target.done():
                target.set_exception(error)
        elif self.kind == DEFERRED:
            if not target.called:
                from twisted.python.failure import Failure

                target.errback(Failure(error))
        else:
            try:
                target.set_exception(error)
            except concurrent.futures.InvalidStateError:
                pass

    def notify_start(self) -> None:
        """Tell the caller its call began executing (once; an error in the hook is logged, never raised)."""
        hook, self.on_start = self.on_start, None
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a caller's hook must not break dispatch
                log.exception("the on_start hook of %s raised", self.name)


class RunStats:
    """Outcome counts and recent run times; mutated by one thread (or under its backend's lock)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)
        self.durations: deque[float] = deque(maxlen=DURATION_SAMPLES)

    def run_time_ms(self) -> dict[str, float]:
        ordered = sorted(list(self.durations))
        return {f"p{q}": percentile(ordered, q) * 1000 for q in (50, 90, 99)}


def percentile(ordered: list[float], q: int) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool, cheap enough to serve on every ``/status``."""

    workers: int
    alive: int
    busy: int
    queued: int
    waiting: int
    completed: int
    failed: int
    crashed: int
    timeouts: int
    cancelled: int
    restarts: int
    threads: int
    worker_threads: int
    start_method: str
    run_time_ms: dict[str, float]
    #: ``"local"``, or the Dask scheduler's URL (``"dask://127.0.0.1:8786"``).
    backend: str = "local"
    #: ``"ok"``, or a short reason: ``"scheduler unreachable"``, ``"no workers"``, ``"broken"``, ``"not running"``.
    health: str = "ok"
    #: Of ``queued``, the calls already in a worker's pipe behind its running call (local backend).
    prefetched: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
