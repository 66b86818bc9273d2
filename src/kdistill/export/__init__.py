"""Shipping a trained model: ONNX from every backend, LiteRT (TFLite) and TensorFlow SavedModel
from Keras, each written by the backend (:meth:`kdistill.backends.contract.Backend.export`),
run in its own runtime on the test split and compared with the framework's outputs before it is
called done (:mod:`kdistill.export.verify`), optionally quantized (:mod:`kdistill.export.quantize`),
and timed beside the framework for the report's deploy table (:mod:`kdistill.export.deploy`).

Everything here is written once, above the backend contract; :func:`kdistill.export.exporter.export_run`
is ``kdistill export`` and the end of a ``kdistill run`` with ``output.export``.
"""
