"""Decoding model answers: KServe v2 binary-extension bodies (JSON header of
``header_len`` bytes, then each binary tensor's bytes in order) and KServe v2
JSON bodies (``outputs[].data``)."""
from __future__ import annotations

import json
from typing import Any, Dict, Tuple

import numpy as np

#: KServe v2 / Triton datatypes -> numpy (little-endian on the wire).
DATATYPES: Dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}


class DecodeError(ValueError):
    """The model's answer is not a KServe v2 body we can read."""


def _bytes_tensor(raw: memoryview, n: int) -> np.ndarray:
    """BYTES: each element is a 4-byte little-endian length + its bytes."""
    out, pos = [], 0
    for _ in range(n):
        if pos + 4 > len(raw):
            raise DecodeError("BYTES tensor truncated")
        ln = int.from_bytes(raw[pos:pos + 4], "little")
        out.append(bytes(raw[pos + 4:pos + 4 + ln]))
        pos += 4 + ln
    return np.array(out, dtype=object)


def _from_binary(raw: memoryview, datatype: str, shape: Tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    if datatype == "BYTES":
        return _bytes_tensor(raw, n).reshape(shape)
    if datatype == "BF16":
        u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    dt = DATATYPES.get(datatype)
    if dt is None:
        raise DecodeError(f"unknown datatype {datatype!r}")
    if len(raw) != n * dt.itemsize:
        raise DecodeError(f"{datatype}{list(shape)} needs {n * dt.itemsize} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dt).reshape(shape)


def _from_json(data: Any, datatype: str, shape: Tuple[int, ...]) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([d.encode() if isinstance(d, str) else d for d in np.ravel(np.array(data, dtype=object))],
                        dtype=object).reshape(shape)
    dt = DATATYPES.get(datatype, np.dtype(np.float32) if datatype == "BF16" else None)
    if dt is None:
        raise DecodeError(f"unknown datatype {datatype!r}")
    return np.asarray(data, dtype=dt.newbyteorder("=")).reshape(shape)


def decode_outputs(body: bytes, header_len: int) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """The named output tensors and the JSON header of a KServe v2 answer.

    ``header_len`` 0 means a pure JSON body; otherwise the first
    ``header_len`` bytes are JSON and outputs with
    ``parameters.binary_data_size`` take their bytes, in order, from the rest.
    Arrays are read-only views of ``body`` where possible.
    """
    mv = memoryview(body)
    head_bytes = mv[:header_len] if header_len else mv
    try:
        head = json.loads(bytes(head_bytes))
    except (ValueError, UnicodeDecodeError) as e:
        raise DecodeError(f"answer header is not JSON: {e}") from None
    if not isinstance(head, dict):
        raise DecodeError("answer header is not a JSON object")
    outputs: Dict[str, np.ndarray] = {}
    pos = header_len
    for o in head.get("outputs") or []:
        name, datatype = o["name"], o["datatype"]
        shape = tuple(int(s) for s in o.get("shape", []))
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not header_len or pos + int(size) > len(body):
                raise DecodeError(f"output {name!r}: binary data beyond the body")
            outputs[name] = _from_binary(mv[pos:pos + int(size)], datatype, shape)
            pos += int(size)
        elif "data" in o:
            outputs[name] = _from_json(o["data"], datatype, shape)
        else:
            raise DecodeError(f"output {name!r} has neither data nor binary_data_size")
    return outputs, head
