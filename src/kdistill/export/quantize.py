"""Post-training quantization of a verified float32 ONNX file with onnxruntime's own tools:
dynamic int8 (int8 weights, activations quantized per batch at run time) and float16 (weights
and arithmetic in float16, float32 inputs and outputs kept). LiteRT files are quantized by the
TFLite converter instead (the backend's ``export`` with ``quantize``)."""

from __future__ import annotations

from pathlib import Path

from kdistill.export.quiet import quiet


def quantize_onnx(source: Path, target: Path, precision: str) -> None:
    """``source`` (float32) quantized to ``precision`` (``int8`` | ``float16``) at ``target``."""
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with quiet():  # it advises pre-processing (shape inference) on every call
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        return
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))
