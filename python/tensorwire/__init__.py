"""tensorwire: the Python client of the tensorwire proxy (TWP/1, revision 3).

>>> import tensorwire
>>> tw = tensorwire.Client("127.0.0.1", 7878)
>>> tw.describe().by_name
>>> r = tw.infer_image(img, pipeline="resnet50")        # uint8 numpy array or PIL image
>>> r.outputs["input"].shape, r.timings.total_s
>>> tw.infer_text("a photo of a cat", pipeline="minilm").outputs["input_ids"]

:class:`AsyncClient` has the same methods as coroutines. Errors are
exceptions named after the protocol's codes, all :class:`TensorwireError`.
"""
from ._core import (
    Description, Faults, ImageSpec, InferResult, Limits, Pipeline, RawBody, Timings, TextSpec,
)
from ._wire import ContentType, PixelFormat
from .aio import AsyncClient
from .client import Client
from .errors import (
    Incomplete, InvalidContent, KindMismatch, Malformed, Overloaded, ProtocolError, Retry,
    TensorwireError, Timeout, TooLarge, UnknownPipeline, UnsupportedVersion, UpstreamError,
    UpstreamUnavailable,
)

__version__ = "0.1.0"

__all__ = [
    "Client", "AsyncClient", "Description", "Pipeline", "ImageSpec", "TextSpec", "Limits",
    "InferResult", "RawBody", "Timings", "Faults", "PixelFormat", "ContentType",
    "TensorwireError", "Malformed", "UnsupportedVersion", "UnknownPipeline", "KindMismatch",
    "TooLarge", "Incomplete", "Overloaded", "UpstreamUnavailable", "UpstreamError",
    "InvalidContent", "Retry", "Timeout", "ProtocolError",
]
