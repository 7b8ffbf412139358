"""Models used by the experiments, as library code.

:mod:`depthaccel.models.mnist_tutorial`: TensorFlow's MNIST convolutional tutorial in
PyTorch (the model of the paper's Fig. 5 right), its overparameterized variant and its
training loop.
"""
