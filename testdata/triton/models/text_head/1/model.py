"""text_head: head.text_head(ids, mask, types) -> FP32 [N, 384]."""

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
    def execute(self, requests):
        out = []
        for r in requests:
            t = [pb_utils.get_input_tensor_by_name(r, n).as_numpy()
                 for n in ("input_ids", "attention_mask", "token_type_ids")]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("embedding", _head.text_head(*t))]))
        return out
