"""identity_fp32: output__0 = input__0 (FP32 [N, 3, 224, 224])."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "input__0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("output__0", x)]))
        return out
