"""TensorFlow's MNIST convolutional tutorial, in PyTorch (the model of the paper's Fig. 5 right).

Source: ``tensorflow/models``, ``tutorials/image/mnist/convolutional.py`` (the tutorial
the paper cites in Section 8). Architecture, initialisation, input scaling, loss,
regulariser, learning-rate schedule and minibatch order follow that file:

- input: pixels ``(x - 127.5) / 255`` in ``[-0.5, 0.5]``, one channel, 28 x 28;
- conv 5x5, 32 filters, 'SAME' padding, ReLU, 2x2 max-pool (stride 2);
- conv 5x5, 64 filters, 'SAME' padding, ReLU, 2x2 max-pool -> 7 x 7 x 64 = 3136;
- dense 3136 -> 512, ReLU, dropout (keep probability 0.5, training only);
- dense 512 -> 10 (logits); loss = mean softmax cross-entropy
  ``+ 5e-4 * (l2(fc1.W) + l2(fc1.b) + l2(fc2.W) + l2(fc2.b))`` with TF's
  ``l2_loss(x) = sum(x**2) / 2``;
- init: every weight truncated normal (stddev 0.1, cut at 2 stddev, as
  ``tf.truncated_normal``), conv1 bias 0, conv2 / fc1 / fc2 biases 0.1;
- SGD with momentum 0.9 (TF's ``MomentumOptimizer`` equals ``torch.optim.SGD`` with
  ``momentum=0.9, dampening=0``), learning rate ``0.01 * 0.95 ** floor(step * 64 / 55000)``
  (``tf.train.exponential_decay(..., staircase=True)``), batch 64, no shuffling: step
  ``s`` takes rows ``[o, o + 64)`` with ``o = (s * 64) % (55000 - 64)``.

The flatten order differs from TF's (NCHW here, NHWC there): a fixed permutation of the
3136 inputs of ``fc1``, immaterial with random initialisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

PIXEL_DEPTH = 255.0
IMAGE_SIZE = 28
NUM_LABELS = 10
INIT_STDDEV = 0.1
L2_WEIGHT = 5e-4


class TutorialCNN(nn.Module):
    """The tutorial's LeNet-5-like network; its dense layers are ``fc1`` and ``fc2`` (nn.Linear)."""

    def __init__(self, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear((IMAGE_SIZE // 4) ** 2 * 64, hidden)
        self.fc2 = nn.Linear(hidden, NUM_LABELS)
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.MaxPool2d(2, 2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.fc1(x.flatten(1)))
        return self.fc2(self.dropout(x))


def truncated_normal_(t: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Fill ``t`` like ``tf.truncated_normal(stddev=std)``: N(0, std^2) redrawn outside +-2 std."""
    with torch.no_grad():
        return nn.init.trunc_normal_(t, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)


def tutorial_init_(model: TutorialCNN, seed: int) -> TutorialCNN:
    """Initialise ``model`` in place as the tutorial does (weights N_trunc(0, 0.1^2); biases 0/0.1/0.1/0.1)."""
    gen = torch.Generator(device=model.conv1.weight.device).manual_seed(seed)
    with torch.no_grad():
        for layer in (model.conv1, model.conv2, model.fc1, model.fc2):
            truncated_normal_(layer.weight, INIT_STDDEV, gen)
        model.conv1.bias.zero_()
        for layer in (model.conv2, model.fc1, model.fc2):
            layer.bias.fill_(0.1)
    return model


def tf_l2_loss(t: torch.Tensor) -> torch.Tensor:
    """TensorFlow's ``tf.nn.l2_loss``: ``sum(t**2) / 2``."""
    return t.pow(2).sum() / 2


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 images ``(n, 28, 28)`` -> float32 ``(n, 1, 28, 28)`` in [-0.5, 0.5]: ``(x - 127.5) / 255``."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape (n, 28, 28), got {images.shape}")
    out = (images.astype(np.float32) - PIXEL_DEPTH / 2.0) / PIXEL_DEPTH
    return out[:, None, :, :]


def staircase_lr(
    step: int,
    *,
    base_lr: float = 0.01,
    decay_rate: float = 0.95,
    batch_size: int = 64,
    decay_examples: int = 55000,
) -> float:
    """The tutorial's learning rate at (0-based) step ``step``.

    ``lr = base_lr * decay_rate ** floor(step * batch_size / decay_examples)``
    (``tf.train.exponential_decay(base_lr, global_step * batch_size, decay_examples,
    decay_rate, staircase=True)``, with ``global_step = step`` before the update).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return base_lr * decay_rate ** math.floor(step * batch_size / decay_examples)


def batch_offset(step: int, batch_size: int, train_size: int) -> int:
    """The tutorial's minibatch start: ``(step * batch_size) % (train_size - batch_size)``."""
    if train_size <= batch_size:
        raise ValueError(
            f"training set ({train_size}) must be larger than the batch ({batch_size})"
        )
    return (step * batch_size) % (train_size - batch_size)
