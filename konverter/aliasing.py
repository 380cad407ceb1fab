"""Which arrays predict() hands back may share memory with the caller's arrays or with each other.

NumPy reshapes, transposes and slices are views, so a model that is an identity up to a view (Dropout,
Reshape, Permute, Cropping, ...) would return its caller's input, and writing into the result would
change the input. Decided here, once, at conversion: a result is checked at run time (and copied only
if it really shares memory) only where it may be a view of an input, of a state given to predict, of
another result or of the state a stateful model carries. Everything else costs nothing per call.
"""

from __future__ import annotations

from .graph import Program
from .layers.base import tensors_in, traits


def _components(program: Program) -> dict:
    """Tensor id -> a representative id; two tensors may share memory only if they have the same one.

    A function not declared `fresh` may return a view of any tensor argument (and its outputs may view
    each other), so they are joined. A fresh result owns new memory, except that an in-place twin
    (`overwrites`) returns its argument. Union-find: near-linear in the number of ops, however long the graph.
    """
    parent: dict = {}

    def find(key: int) -> int:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def join(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    for op in program.ops:
        outputs = [id(t) for t in op.outputs]
        for key in outputs:
            find(key)
        declared = traits(op.fn)
        if declared.fresh and not declared.overwrites and len(outputs) == 1:
            continue
        for t in tensors_in([op.args, op.kwargs]):
            join(id(t), outputs[0])
        for key in outputs[1:]:
            join(key, outputs[0])
    return {key: find(key) for key in list(parent)}


# A result that may share memory with more arrays than this is copied outright: the checks would grow
# with the square of the outputs, the copies only linearly.
MAX_CHECKS = 4


def own_results(program: Program, names: dict) -> tuple[list, list, list]:
    """(result names, final-state names, lines to run before returning them) for predict's return.

    Each returned array that may share memory with a caller's array (an input, a given state), with a
    result before it or with another returned state gets a new name `r<k>`: a copy when it does share
    memory (or may share it with over MAX_CHECKS arrays), else the array itself. `names` maps tensor
    ids to the generated file's variable names.
    """
    group = _components(program)
    slots = {id(slot) for slot, _ in program.states}
    sharers: dict = {}  # component -> names of the caller's arrays and of results returned so far
    for t in [inp.tensor for inp in program.inputs] + [slot for slot, _ in program.states]:
        sharers.setdefault(group.get(id(t), id(t)), []).append(names[id(t)])
    lines: list = []
    result_names = []
    for k, t in enumerate(list(program.outputs) + [final for _, final in program.states]):
        name = names[id(t)]
        others = sharers.setdefault(group.get(id(t), id(t)), [])
        if id(t) in slots:  # a given state returned as it came (it may be None): it is the caller's already
            result_names.append(name)
        elif len(others) > MAX_CHECKS:
            lines.append(f"r{k} = {name}.copy()")
            result_names.append(f"r{k}")
        elif others:
            shared = " or ".join(f"np.may_share_memory({name}, {other})" for other in others)
            lines.append(f"r{k} = {name}.copy() if {shared} else {name}")
            result_names.append(f"r{k}")
            others.append(f"r{k}")
        else:
            result_names.append(name)
            others.append(name)
    n = len(program.outputs)
    return result_names[:n], result_names[n:], lines
