"""Reference materializers shared by the tests, independent of the code under test.

* :mod:`tests.references.deep_linear`: NumPy closed forms for deep linear networks
  (Kronecker Jacobians, GGN, gradient, q-NGD directions, spectral powers);
* :mod:`tests.references.layers`: direct loops for convolution, pooling and activations,
  and the kink test for finite differences;
* :mod:`tests.references.curvature`: the generic (default-form) GGN matrix of any model
  family, and float64 host copies of arrays and parameter tuples.

Test files import from here (and from :mod:`tests.cases`, :mod:`tests.helpers`), never
from other test files.
"""
