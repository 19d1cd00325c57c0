"""Make every computation a page could run raise, to show that notebooks and loads only read the store.

``FORBID`` is Python source (so that a notebook kernel can run it as a cell too): it replaces, in every loaded
``ddnb`` module, each reference to a training, distillation, curvature or influence entry point by a function
that raises ``RuntimeError("computed: NAME")``.
"""

FORBID = '''
import sys as _sys
import ddnb.sections, ddnb.explorer, ddnb.viz  # noqa: F401  every module a page imports
from ddnb import stacked as _stacked, train as _train
from ddnb.analysis import curvature as _curvature, influence as _influence, substitution as _substitution
from ddnb.distill import loop as _loop

def _forbidding(name):
    def forbidden(*args, **kwargs):
        raise RuntimeError(f"computed: {name}")
    return forbidden

_entry_points = {id(function): name for name, function in {
    "train": _train.train, "train_step": _train.train_step, "train_stacked": _stacked.train_stacked,
    "evaluate_seeds": _stacked.evaluate_seeds, "run_loop": _loop.run_loop,
    "hessian_vector_products": _curvature.hessian_vector_products, "training_trace_curve": _curvature.training_trace_curve,
    "loo_influence": _influence.loo_influence, "estimate_agreement": _influence.estimate_agreement,
    "feature_map": _substitution.feature_map, "mixing_point": _substitution.mixing_point}.items()}
for _module in [m for n, m in list(_sys.modules.items()) if n == "ddnb" or n.startswith("ddnb.")]:
    for _attribute, _value in list(vars(_module).items()):
        if id(_value) in _entry_points:
            setattr(_module, _attribute, _forbidding(_entry_points[id(_value)]))
'''


def forbid_compute() -> None:
    """Run ``FORBID`` in this process (undo by restoring the modules, e.g. with ``restore``)."""
    exec(FORBID, {})


def snapshot() -> dict:
    """Every attribute of every loaded ddnb module, to ``restore`` after ``forbid_compute``."""
    import sys

    return {name: dict(vars(module)) for name, module in sys.modules.items() if name == "ddnb" or name.startswith("ddnb.")}


def restore(saved: dict) -> None:
    """Put back the module attributes ``snapshot`` saved."""
    import sys

    for name, attributes in saved.items():
        vars(sys.modules[name]).update(attributes)
