"""Models served by the real KServe v2 server (the `kserve` package) for
tensorwire's upstream tests and bench.

  identity      returns every input unchanged, same name, dtype and shape
                (tensors are checked bit for bit after the round trip)
  slow          identity after 2 s (a request in flight when the test
                kills the server)
  channel_mean  a small real computation: for a float image input
                [1, C, H, W] (NCHW) the per-channel mean as FP64 [C];
                for integer inputs (token ids) the sum as INT64 [1]

Outputs are binary (Inference-Header-Content-Length) when the request
asks for it with parameters.binary_data_output = true.

Usage: python models.py --http_port PORT   (grpc off, one worker)
"""

import argparse
import asyncio
import sys

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid


def _response(model, request, outputs):
    # requested_outputs: only the outputs the request names (each with its
    # own binary_data flag); none named = all, binary per the request.
    return InferResponse(
        response_id=request.id or generate_uuid(),
        model_name=model.name,
        infer_outputs=outputs,
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )


def _output(name, array):
    datatype = {
        np.dtype(np.float32): "FP32",
        np.dtype(np.float16): "FP16",
        np.dtype(np.float64): "FP64",
        np.dtype(np.int64): "INT64",
        np.dtype(np.int32): "INT32",
        np.dtype(np.uint8): "UINT8",
        np.dtype(np.int8): "INT8",
    }[array.dtype]
    out = InferOutput(name=name, shape=list(array.shape), datatype=datatype)
    out.set_data_from_numpy(array, binary_data=True)
    return out


class Identity(Model):
    def __init__(self):
        super().__init__("identity")
        self.ready = True

    def predict(self, payload: InferRequest, headers=None):
        outputs = [_output(i.name, i.as_numpy()) for i in payload.inputs]
        return _response(self, payload, outputs)


class Slow(Model):
    def __init__(self):
        super().__init__("slow")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None):
        await asyncio.sleep(2.0)
        outputs = [_output(i.name, i.as_numpy()) for i in payload.inputs]
        return _response(self, payload, outputs)


class ChannelMean(Model):
    def __init__(self):
        super().__init__("channel_mean")
        self.ready = True

    def predict(self, payload: InferRequest, headers=None):
        outputs = []
        for i in payload.inputs:
            a = i.as_numpy()
            if np.issubdtype(a.dtype, np.integer):
                outputs.append(_output(i.name + "_sum", np.array([a.astype(np.int64).sum()], dtype=np.int64)))
            else:
                if a.ndim != 4:
                    raise ValueError(f"input {i.name}: expected NCHW, got shape {list(a.shape)}")
                mean = a.astype(np.float64).mean(axis=(0, 2, 3))
                outputs.append(_output(i.name + "_mean", mean))
        return _response(self, payload, outputs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, required=True)
    args, _ = parser.parse_known_args()
    sys.argv = [sys.argv[0], "--http_port", str(args.http_port), "--enable_grpc", "false", "--workers", "1"]
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([Identity(), ChannelMean(), Slow()])
