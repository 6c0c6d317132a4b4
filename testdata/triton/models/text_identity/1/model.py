"""text_identity: every input returned unchanged under its own name."""

import triton_python_backend_utils as pb_utils

NAMES = ("input_ids", "attention_mask", "token_type_ids")


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            tensors = [
                pb_utils.Tensor(n, pb_utils.get_input_tensor_by_name(r, n).as_numpy())
                for n in NAMES
            ]
            out.append(pb_utils.InferenceResponse(tensors))
        return out
