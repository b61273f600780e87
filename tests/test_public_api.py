"""The public API is pinned (after array-api-extra's ``tests/main/test_public_api.py``).

``arraycurv.__all__`` holds the headline names (design section 5.2) and the subpackages;
each subpackage's ``__all__`` is pinned below. A change to the public namespace is a
deliberate edit of these lists. Every public module lists in ``__all__`` every public
function and class it defines, and ``import arraycurv`` loads none of the optional or
heavy libraries (SciPy comes with a LinearOperator, matplotlib with a figure,
scikit-learn with the digits, hypothesis only in tests).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import arraycurv as ac

#: ``arraycurv.__all__``
TOP_LEVEL = [
    "DeepLinear", "LinearMoments", "MSE", "Sequential", "SoftmaxCrossEntropy", "UpdateRule", "adam", "apply_direction",
    "backend", "bernacchia_ngd", "bernacchia_ngd_direction", "chain", "class_subspace_newton", "curvature", "data",
    "directions", "dynamics", "experiments", "flatten", "forward", "ggn_block_diag", "ggn_blocks", "ggn_matrix",
    "ggn_vp", "hessian_matrix", "hvp", "init_params", "integrate_rule", "jacobian", "jvp", "kfac_qngd_direction",
    "lenet5", "linalg", "linearize", "losses", "mlp", "models", "newton_summary", "ngd", "ngd_d", "param_shapes",
    "params", "qngd", "qngd_blockdiag", "qngd_blockdiag_direction", "qngd_direction", "regularized_ngd",
    "regularized_ngd_direction", "results", "rules", "sgd", "sqrt_ngd", "sqrt_ngd_d", "sweeps", "train", "unflatten",
    "validation", "value_and_grad", "vjp",
]

#: ``arraycurv.<subpackage>.__all__``
SUBPACKAGES = {
    "backend": [
        "BACKENDS", "apply_memory_policy", "apply_thread_policy", "batch_inner_matrix", "blas_threads",
        "check_all_finite", "check_float",
        "check_same_device", "device_of", "float_dtype", "from_numpy", "host_namespace", "host_scalar", "integers",
        "is_array", "namespace_by_name", "namespace_name", "namespace_of", "namespace_of_pairs", "normal", "orthogonal",
        "rng", "set_malloc_thresholds", "set_num_threads", "to_device", "to_numpy", "uniform", "window_gather",
        "window_scatter_add",
        "writable_view",
    ],
    "curvature": [
        "ClassSubspace", "FISHER_KINDS", "FISHER_VARIANTS", "KFactors", "class_gradients", "class_subspace",
        "deep_linear", "fisher", "fisher_empirical_matrix", "fisher_empirical_vp", "fisher_exact_matrix",
        "fisher_exact_vp", "fisher_kron_factors", "fisher_mc_matrix", "fisher_mc_vp", "fisher_operator", "generic",
        "ggn_block_diag", "ggn_blocks", "ggn_matmat", "ggn_matrix", "ggn_operator", "ggn_vp", "gradient_gram",
        "hessian_matrix", "hessian_operator", "hvp_matmat", "jacobian", "jacobian_matmat", "kfac_block", "kron",
        "kron_factors", "map_jacobian", "null_space_basis", "null_space_direction", "operators", "per_sample_grads",
        "per_sample_rows", "reduce", "sequential", "subspace", "subspace_basis", "subspace_curvature", "value_and_grad",
    ],
    "data": [
        "BERNACCHIA_FIG1_WIDTHS", "ClassificationData", "TeacherStudentData", "aligned_params",
        "bernacchia_teacher_student", "huh_teacher_student", "input_covariance_spectrum", "load_digits",
    ],
    "directions": [
        "FORMS", "bernacchia", "bernacchia_ngd_direction", "class_subspace", "class_subspace_direction",
        "class_subspace_newton_direction", "clip_direction", "fractional", "kfac", "kfac_qngd_direction",
        "qngd_blockdiag_direction", "qngd_direction", "qngd_direction_dual", "qngd_direction_full",
        "qngd_direction_map", "qngd_direction_svd", "regularized_ngd_direction", "subspace_newton_direction",
    ],
    "dynamics": [
        "DivergenceError", "IntegrationError", "OdeSolution", "TrainResult", "integrate", "integrate_rule",
        "print_progress", "rk4_fixed", "rule_velocity", "solve_ode", "theory", "train", "training",
    ],
    "experiments": [
        "EXPERIMENTS", "Experiment", "ExperimentConfig", "UsageError", "check_out_dir", "config_dict", "config_field",
        "config_from_dict", "get_experiment", "huh_relu_digits", "huh_teacher_student", "huh_theory", "plotting",
        "register_experiment", "registry", "run_experiment", "unregister_experiment",
    ],
    "linalg": [
        "PowerInfo", "block_lanczos", "complement_project", "fraction_in_span", "hutchinson_trace", "hutchpp_trace",
        "kron", "kron_matvec", "kron_psd_power_apply", "kron_solve", "kronecker", "lanczos", "lowrank",
        "orthonormal_basis", "pinv_power", "powers", "principal_angles", "project", "psd_power", "slq", "slq_trace",
        "solve_generalized_sylvester", "solve_sylvester", "spectral", "spectral_density", "stack_directions",
        "subspace_overlap", "subspaces", "sylvester",
    ],
    "losses": [
        "MSE", "SoftmaxCrossEntropy", "check_target_shape", "check_targets", "loss_grad", "loss_hessian",
        "loss_hessian_factor", "loss_hessian_vp", "loss_value", "loss_value_and_grad", "sample_targets",
    ],
    "models": [
        "DeepLinear", "LinearMoments", "Linearization", "Sequential", "SequentialLinearization", "as_sequential",
        "base", "deep_linear", "forward", "hvp", "init_params", "jvp", "layers", "lenet5", "linearize", "mlp",
        "moments", "param_shapes", "partial_products", "sequential", "total_map", "vjp", "whitened_moments",
    ],
    "params": [
        "flatten", "num_params", "shapes_of", "tree_add", "tree_axpy", "tree_map", "tree_norm", "tree_scale",
        "tree_sub", "tree_vdot", "tree_zeros_like", "unflatten",
    ],
    "results": [
        "atomic_write", "format_table", "jsonable", "load_npz", "read_json", "read_npz", "save_npz", "write_json",
        "write_npz", "write_text",
    ],
    "rules": [
        "AdamState", "EmptyState", "RULE_NAMES", "RuleSpec", "UpdateRule", "adam", "alias", "apply_direction", "base",
        "chain", "clip_by_norm", "damping", "ema", "is_empty_state", "is_stateless", "make_rule", "momentum", "ngd",
        "ngd_d", "partition", "precondition", "qngd", "qngd_blockdiag", "register_rule", "registry", "regularized_ngd",
        "rule_by_name", "rule_label", "rule_names", "rule_q", "rule_spec", "scale_by_adam", "scale_by_lr", "sgd",
        "sqrt_ngd", "sqrt_ngd_d", "transforms",
    ],
    "sweeps": [
        "Cell", "Sweep", "SweepLockedError", "SweepResult", "aggregate", "config_key", "format_aggregate", "grid",
        "load_records", "parse_grid", "parse_seeds", "plot_bands", "run", "run_sweep", "spawn_seeds", "stats",
    ],
    "validation": [
        "ArgumentTypeError", "batch_leaves", "check_arrays", "check_bool", "check_call", "check_clip", "check_finite",
        "check_int", "check_lr", "check_matrix", "check_ndim", "check_nonneg", "check_params", "check_positive_int",
        "check_q", "check_rcond", "check_real", "check_shape", "check_square", "check_symmetric", "validated",
    ],
}

#: libraries ``import arraycurv`` must not load
NOT_IMPORTED = ("scipy", "matplotlib", "sklearn", "hypothesis")


def _public_modules():
    names = ["arraycurv"] + [
        m.name for m in pkgutil.walk_packages(ac.__path__, "arraycurv.")
        if not any(part.startswith("_") for part in m.name.split("."))
    ]
    return [importlib.import_module(n) for n in names]


def test_top_level_all_is_pinned():
    assert len(ac.__all__) == len(set(ac.__all__)), "arraycurv.__all__ lists a name twice"
    missing, extra = sorted(set(TOP_LEVEL) - set(ac.__all__)), sorted(set(ac.__all__) - set(TOP_LEVEL))
    assert not missing and not extra, f"arraycurv.__all__: missing {missing}, unexpected {extra}"
    assert all(hasattr(ac, n) for n in ac.__all__)


def test_top_level_lists_every_subpackage():
    subpackages = {n for n in ac.__all__ if inspect.ismodule(getattr(ac, n))}
    assert subpackages == set(SUBPACKAGES)


@pytest.mark.parametrize("name", sorted(SUBPACKAGES))
def test_subpackage_all_is_pinned(name):
    mod = getattr(ac, name)
    assert len(mod.__all__) == len(set(mod.__all__)), f"arraycurv.{name}.__all__ lists a name twice"
    missing = sorted(set(SUBPACKAGES[name]) - set(mod.__all__))
    extra = sorted(set(mod.__all__) - set(SUBPACKAGES[name]))
    assert not missing and not extra, f"arraycurv.{name}.__all__: missing {missing}, unexpected {extra}"
    assert all(hasattr(mod, n) for n in mod.__all__), f"arraycurv.{name}.__all__ names what does not exist"


def test_all_contains_all_public_functions():
    """Each public module's ``__all__`` lists every public function and class it defines."""
    problems = []
    for module in _public_modules():
        if not hasattr(module, "__all__"):
            problems.append(f"{module.__name__}: no __all__")
            continue
        defined = {
            name for name, obj in inspect.getmembers(module, lambda o: inspect.isfunction(o) or inspect.isclass(o))
            if not name.startswith("_") and obj.__module__ == module.__name__
        }
        if missing := sorted(defined - set(module.__all__)):
            problems.append(f"{module.__name__}: missing from __all__: {missing}")
        if absent := sorted(n for n in module.__all__ if not hasattr(module, n)):
            problems.append(f"{module.__name__}: in __all__ but absent: {absent}")
    assert not problems, "\n".join(problems)


def _loaded_after(statement):
    code = f"import sys; {statement}; print(' '.join(m for m in {NOT_IMPORTED!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_import_arraycurv_loads_no_optional_library():
    assert _loaded_after("import arraycurv") == []


def test_import_arraycurv_testing_does_not_import_hypothesis():
    assert _loaded_after("import arraycurv.testing") == []
