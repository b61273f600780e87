"""Huh (2020) S.I.3 (Fig S.I.2) on scikit-learn's digits instead of MNIST: a ReLU network
[64, 64, 48, 32, 10] from orthogonal weights with gains 1 ... 1e-6. SGD and NGD-d stall at
small gains; sqrt-NGD-d (Kronecker-factored, no damping, one learning rate) trains at all.

Run:  python examples/relu_digits.py                (about 1-2 minutes on 2 CPU cores)
Same: arraycurv relu-digits --out results/relu-digits
"""

from threadpoolctl import threadpool_limits  # ships with scikit-learn

from arraycurv.experiments import huh_relu_digits as relu_digits

config = relu_digits.Config(  # = DigitsConfig, validated when built
    gains=(1.0, 1e-2, 1e-4, 1e-6),
    sizes=(64, 64, 48, 32, 10),
    steps=200,
    batch_size=128,
    lr=(("sgd", 0.2), ("ngd_d", 0.05), ("sqrt_ngd_d", 0.05)),  # the same rate at every gain
)
with threadpool_limits(limits=1, user_api="blas"):  # small matrices: one BLAS thread is fastest
    summary = relu_digits.run(config, "results/relu-digits")
for key, run in summary["runs"].items():
    print(f"{key:22s} test accuracy {run['final_test_accuracy']}")
