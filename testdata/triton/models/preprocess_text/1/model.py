"""preprocess_text: text BYTES [N, 1] (UTF-8) -> embedding FP32 [N, 384]
(and input_ids INT64 [1, L] when requested, for one text)."""

import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# The shared head (testdata/triton/head.py) sits outside the model
# repository, where Triton would take any directory (__pycache__ too) for
# a model; this file is testdata/triton/models/<model>/1/model.py.
_here = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(_here)))))
import head as _head  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.tok = _head.load_tokenizer()

    def execute(self, requests):
        out = []
        for r in requests:
            texts = pb_utils.get_input_tensor_by_name(r, "text").as_numpy().reshape(-1)
            # One text at a time: texts of a batch have different lengths.
            encoded = [_head.tokenize(self.tok, t.decode("utf-8")) for t in texts]
            emb = np.concatenate([_head.text_head(*e) for e in encoded])
            wanted = r.requested_output_names() or {"embedding"}
            tensors = []
            if "embedding" in wanted:
                tensors.append(pb_utils.Tensor("embedding", emb))
            if "input_ids" in wanted:
                if len(encoded) != 1:
                    out.append(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("input_ids only for one text")))
                    continue
                tensors.append(pb_utils.Tensor("input_ids", encoded[0][0]))
            out.append(pb_utils.InferenceResponse(tensors))
        return out
