"""logits: head.image_head(input__0) -> FP32 [N, 1000]."""

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
            x = pb_utils.get_input_tensor_by_name(r, "input__0").as_numpy()
            y = _head.image_head(x)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", y)]))
        return out
