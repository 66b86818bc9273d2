"""The Keras 3 backend: the loss catalogue (``keras.ops`` functions and
``keras.distillation.DistillationLoss`` subclasses), a ``keras.Model`` Distiller, the zoo and the
``kdistill run`` pipeline. Runs on the Keras backend ``KERAS_BACKEND`` names (TensorFlow by default)."""
