"""The MLP, its NumPy oracle, data sources and the training loop. Knows nothing of Ray.

Importing the package asks Intel MKL (torch's CPU matmuls) for results that do not depend on
memory alignment (``MKL_CBWR=AUTO,STRICT``, unless the environment sets MKL_CBWR already): without
it a matmul's last bits depend on where each operand happens to lie, so a pack member's numbers
would change with its row in the stack, and so with which neighbours have left it. MKL reads the
setting at its first call, so import ``model`` before the process's first matmul. Measured cost:
none beyond noise (model/packed.py's step).
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
