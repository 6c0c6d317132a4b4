"""preprocess_logits: raw UINT8 [N, H, W, 3] -> logits FP32 [N, 1000]
(and pixel_values FP32 [N, 3, 224, 224] when requested)."""

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
            raw = pb_utils.get_input_tensor_by_name(r, "raw").as_numpy()
            x = np.stack([_head.preprocess_image(img) for img in raw])
            wanted = r.requested_output_names() or {"logits"}
            tensors = []
            if "logits" in wanted:
                tensors.append(pb_utils.Tensor("logits", _head.image_head(x)))
            if "pixel_values" in wanted:
                tensors.append(pb_utils.Tensor("pixel_values", x))
            out.append(pb_utils.InferenceResponse(tensors))
        return out
