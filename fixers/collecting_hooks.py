"""A forward hook left registered that collects outputs (``register_forward_hook(lambda m, a,
out: ACTS.append(out))``): every call's activations stay alive. The edits, in the order tried:
keep only the last few in what the hook fills (a module-level list, or a recorder's own list
filled by a bound method), or unregister the hook (which removes what it collects: never chosen
unasked).

Hooks are looked for in every file of the user's source: the culprit is the hooked module
(often torch's own ``Conv2d``), not the code that registered the hook."""

from __future__ import annotations

from typing import Any

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._appended import bound_module_list, readers_of, still_seen, trim_after_grow
from bisector.fixers._bounds import KEEP_LAST
from bisector.fixers.base import LEAK, PYTHON_LEAKS, Candidate, Example, FixTarget, SourceEdit

HOOK_METHODS = ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook")


class CollectingHooks:
    name = "collecting-hooks"
    family = PYTHON_LEAKS
    description = "a forward hook that collects outputs: keep the last few it collected, or unregister it"
    stages = ("eager", "export")
    kinds = (LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        out: list[Candidate] = []
        for path, source in target.sources.items():
            module = _cst.parse(source)
            if module is not None:
                out += self._hooks(path, source, module)
        return out

    def _hooks(self, path: str, source: str, module: cst.Module) -> list[Candidate]:
        collecting = _collecting_functions(module)
        hooks: list[cst.BaseExpression] = []

        def pred(stmt: cst.BaseSmallStatement, where: str) -> bool:
            hook = _hook_registered(stmt)
            if hook is None:
                return False
            hit = (
                _grows(hook.body)
                if isinstance(hook, cst.Lambda)
                else (_cst.dotted(hook) in collecting or _cst.dotted(hook).split(".")[-1] in collecting)
            )
            if hit:
                hooks.append(hook)
            return hit

        after, removed = _cst.remove(source, pred)
        if not removed:
            return []
        out = []
        readers: list[str] = []
        grown: list[str] = []
        for hook in hooks:
            out += self._bounded(path, source, module, hook, readers, grown)
        out.append(
            Candidate(
                self.name,
                f"unregister the forward hook that collects outputs: {removed[0][:80]}",
                edits=(SourceEdit(path, source, after, f"remove {removed[0]}"),),
                size=len(removed),
                # Collecting is the hook's whole effect: without it, what it fills stays empty, whoever
                # reads it (code outside these files may: a recorder's list is there to be read).
                removes_behaviour=(
                    f"what the hook collects is read by {', '.join(readers)}, which would see nothing"
                    if readers
                    else f"{', '.join(grown) or 'what the hook collects'} would stay empty"
                ),
            )
        )
        return out

    def _bounded(
        self, path: str, source: str, module: cst.Module, hook: Any, readers: list[str], grown: list[str]
    ) -> list[Candidate]:
        """Keep only the last few in each list the hook grows. readers and grown gather, over the
        hooks, who reads what they fill and what they grow (the unregistering candidate says so)."""
        out = []
        fn_name = "" if isinstance(hook, cst.Lambda) else _cst.dotted(hook).split(".")[-1]
        body = hook.body if isinstance(hook, cst.Lambda) else _function(module, fn_name)
        for owner in _grown(body) if body is not None else []:
            grown.append(owner)
            if "." in owner and not (owner.startswith("self.") and fn_name):
                continue  # an attribute of the hook's module argument: nothing module-level to bound
            if "." in owner:
                # A bound method's list (`self.activations` filled by `self.save_activation`, as
                # Grad-CAM's recorders do): trimmed inside that method, whatever class holds it.
                bounded = trim_after_grow(source, owner, lambda where, f=fn_name: where.split(".")[-1] == f)
            else:
                readers += [r for r in readers_of(module, owner, None, exclude=(fn_name,)) if r not in readers]
                bounded = (
                    trim_after_grow(source, owner, lambda where, f=fn_name: where == f)
                    if fn_name
                    else bound_module_list(source, owner)
                )
            if bounded is not None:
                seen = still_seen(readers)
                out.append(
                    Candidate(
                        self.name,
                        f"keep only the last {KEEP_LAST} in {owner}, which the hook {fn_name or 'lambda'} fills{seen}",
                        edits=(SourceEdit(path, source, bounded, f"bound {owner} to the last {KEEP_LAST}"),),
                        size=1,
                    )
                )
        return out

    examples = (
        Example(
            "a forward hook collecting activations",
            FixTarget(
                "eager",
                LEAK,
                region_type="torch.nn.modules.conv.Conv2d",
                sources={
                    "m.py": (
                        "ACTS = []\n\nclass Net:\n    def __init__(self):\n        self.conv = make()\n"
                        "        self.conv.register_forward_hook(lambda m, a, out: ACTS.append(out))\n\n"
                        "    def forward(self, x):\n        return self.conv(x)\n"
                    )
                },
            ),
            True,
            "register_forward_hook",
            edited=(
                (
                    "import collections\n"
                    "ACTS = collections.deque(maxlen=4)\n"
                    "\n"
                    "class Net:\n"
                    "    def __init__(self):\n"
                    "        self.conv = make()\n"
                    "        self.conv.register_forward_hook(lambda m, a, out: ACTS.append(out))\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        return self.conv(x)\n"
                ),
                (
                    "ACTS = []\n"
                    "\n"
                    "class Net:\n"
                    "    def __init__(self):\n"
                    "        self.conv = make()\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        return self.conv(x)\n"
                ),
            ),
        ),
        Example(
            "a recorder's bound method filling its own list (Grad-CAM's activations recorder)",
            FixTarget(
                "eager",
                LEAK,
                region_type="torch.nn.modules.activation.Tanh",
                sources={
                    "m.py": (
                        "class Recorder:\n"
                        "    def __init__(self, layer):\n"
                        "        self.activations = []\n"
                        "        layer.register_forward_hook(self.save)\n"
                        "\n"
                        "    def save(self, module, args, output):\n"
                        "        self.activations.append(output.detach())\n"
                    )
                },
            ),
            True,
            "self.activations",
            edited=(
                (
                    "class Recorder:\n"
                    "    def __init__(self, layer):\n"
                    "        self.activations = []\n"
                    "        layer.register_forward_hook(self.save)\n"
                    "\n"
                    "    def save(self, module, args, output):\n"
                    "        self.activations.append(output.detach())\n"
                    "        del self.activations[:-4]  # keep only the latest 4\n"
                ),
                (
                    "class Recorder:\n"
                    "    def __init__(self, layer):\n"
                    "        self.activations = []\n"
                    "\n"
                    "    def save(self, module, args, output):\n"
                    "        self.activations.append(output.detach())\n"
                ),
            ),
        ),
        Example(
            "a hook that only prints keeps nothing",
            FixTarget(
                "eager",
                LEAK,
                region_type="torch.nn.modules.conv.Conv2d",
                sources={
                    "m.py": (
                        "class Net:\n    def __init__(self):\n        self.conv = make()\n"
                        "        self.conv.register_forward_hook(lambda m, a, out: print(out.shape))\n\n"
                        "    def forward(self, x):\n        return self.conv(x)\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "the runtime's arena is not the model's code",
            FixTarget("inference", "shape-growth", sources={"m.py": "x = 1\n"}),
            False,
        ),
    )


def _hook_registered(stmt: cst.BaseSmallStatement) -> cst.BaseExpression | None:
    """`x.register_forward_hook(hook, ...)` as a statement -> hook."""
    if not (
        isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call) and isinstance(stmt.value.func, cst.Attribute)
    ):
        return None
    if stmt.value.func.attr.value not in HOOK_METHODS or not stmt.value.args:
        return None
    return stmt.value.args[0].value


def _function(module: cst.Module, name: str) -> cst.FunctionDef | None:
    """The top-level function of that name, else a method of that name in a top-level class (a
    hook passed as `self.save`)."""
    for node in module.body:
        if isinstance(node, cst.FunctionDef) and node.name.value == name:
            return node
    for node in module.body:
        if isinstance(node, cst.ClassDef):
            for item in node.body.body:
                if isinstance(item, cst.FunctionDef) and item.name.value == name:
                    return item
    return None


def _grown(node: cst.CSTNode) -> list[str]:
    """The containers this code grows (`X.append(...)` -> "X")."""
    out: list[str] = []

    class V(cst.CSTVisitor):
        def visit_Call(self, n: cst.Call) -> None:
            if isinstance(n.func, cst.Attribute) and n.func.attr.value in _cst.GROW_METHODS:
                owner = _cst.dotted(n.func.value)
                if owner and owner not in out:
                    out.append(owner)

    node.visit(V())
    return out


def _grows(node: cst.CSTNode) -> bool:
    """Does this expression call X.append/extend/... ?"""
    found = False

    class V(cst.CSTVisitor):
        def visit_Call(self, n: cst.Call) -> None:
            nonlocal found
            if isinstance(n.func, cst.Attribute) and n.func.attr.value in _cst.GROW_METHODS:
                found = True

    node.visit(V())
    return found


def _collecting_functions(module: cst.Module) -> set[str]:
    """Top-level functions and methods whose body grows a container (hook candidates)."""
    names: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            if _grows(node.body):
                names.add(node.name.value)

    module.visit(V())
    return names


FIXER = CollectingHooks()
