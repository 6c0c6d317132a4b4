"""Exceptions: one class per ERROR code of the protocol, a common base.

>>> try:
...     tw.infer_text(b"\\xff", pipeline="minilm")
... except tensorwire.InvalidContent as e:
...     print(e.code, e.message)
"""
from __future__ import annotations

from typing import Dict, Optional, Type


class TensorwireError(Exception):
    """Base of every error the client raises for a request.

    ``code`` is the protocol's ERROR code (None for client-side errors),
    ``message`` the proxy's UTF-8 message, ``request_id`` the id of the
    attempt that got the answer.
    """

    code: Optional[int] = None
    name: str = "ERROR"

    def __init__(self, message: str = "", *, request_id: Optional[int] = None,
                 pipeline: Optional[int] = None):
        self.message = message
        self.request_id = request_id
        self.pipeline = pipeline
        text = f"{self.name}: {message}" if message else self.name
        if request_id is not None:
            text += f" (request_id {request_id:#x})"
        super().__init__(text)


class Malformed(TensorwireError):
    """A field was inconsistent or out of range (code 1)."""
    code, name = 1, "MALFORMED"


class UnsupportedVersion(TensorwireError):
    """The proxy does not speak that protocol version (code 2)."""
    code, name = 2, "UNSUPPORTED_VERSION"


class UnknownPipeline(TensorwireError):
    """No pipeline with that id (or name) (code 3)."""
    code, name = 3, "UNKNOWN_PIPELINE"


class KindMismatch(TensorwireError):
    """Text to an image pipeline or the reverse, or an unlisted pixel format (code 4)."""
    code, name = 4, "KIND_MISMATCH"


class TooLarge(TensorwireError):
    """Over a configured limit: fragments, pixels or text bytes (code 5)."""
    code, name = 5, "TOO_LARGE"


class Incomplete(TensorwireError):
    """Fragments were missing when the proxy's timeout expired (code 6).
    Retried with a new request id up to ``retries`` times."""
    code, name = 6, "INCOMPLETE"


class Overloaded(TensorwireError):
    """The proxy shed the request: too many requests or bytes in flight (code 7)."""
    code, name = 7, "OVERLOADED"


class UpstreamUnavailable(TensorwireError):
    """The model server cannot be reached (code 8)."""
    code, name = 8, "UPSTREAM_UNAVAILABLE"


class UpstreamError(TensorwireError):
    """The model server answered with an error; ``message`` is its text (code 9)."""
    code, name = 9, "UPSTREAM_ERROR"


class InvalidContent(TensorwireError):
    """Invalid UTF-8, or a tile without the halo it needs (code 10)."""
    code, name = 10, "INVALID_CONTENT"


class Retry(TensorwireError):
    """The source address is not validated (code 11). The client answers it
    with the HELLO/TOKEN handshake and one resend; raised if that fails."""
    code, name = 11, "RETRY"


class Timeout(TensorwireError, TimeoutError):
    """No complete answer within ``timeout`` on any of the ``1 + retries``
    attempts."""
    name = "TIMEOUT"


class ProtocolError(TensorwireError):
    """The proxy's answer broke the protocol or could not be decoded."""
    name = "PROTOCOL_ERROR"


BY_CODE: Dict[int, Type[TensorwireError]] = {
    c.code: c for c in (Malformed, UnsupportedVersion, UnknownPipeline, KindMismatch, TooLarge,
                        Incomplete, Overloaded, UpstreamUnavailable, UpstreamError,
                        InvalidContent, Retry)
}


def from_code(code: int, message: str, request_id: Optional[int] = None,
              pipeline: Optional[int] = None) -> TensorwireError:
    """The exception for an ERROR datagram's code (unknown codes: the base)."""
    cls = BY_CODE.get(code)
    if cls is None:
        e = TensorwireError(f"code {code}: {message}", request_id=request_id, pipeline=pipeline)
        e.code = code
        return e
    return cls(message, request_id=request_id, pipeline=pipeline)
