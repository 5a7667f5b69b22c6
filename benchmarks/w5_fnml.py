"""W5, fnml side: the tutorial's training script written with fnml (python start to exit).

Same model, data shapes, loss, optimizer, epochs and printed lines as ``w5_torch.py``. The persistent
compilation cache is whatever the environment says (``JAX_COMPILATION_CACHE_DIR``; the benchmark
runs this script cold and warm).
"""

import jax
from flax import nnx

from fnml import layers, losses, optim, train

model = layers.SimpleNN(rngs=nnx.Rngs(0))
key_x, key_y = jax.random.split(jax.random.key(0))
X = jax.random.normal(key_x, (10, 2))
Y = jax.random.normal(key_y, (10, 1))
criterion = losses.MSELoss()
optimizer = optim.adam(lr=0.001)

result = train.fit(model, optimizer, criterion, X, Y, epochs=100, log_every=10)
