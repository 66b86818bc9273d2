"""The Keras 3 backend: its contract implementation (``backend.BACKEND``), the loss catalogue
(``keras.ops`` functions and ``keras.distillation.DistillationLoss`` subclasses), a ``keras.Model``
Distiller and the zoo. Runs on the Keras backend ``KERAS_BACKEND`` names (TensorFlow by default)."""
