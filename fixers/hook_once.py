"""A hook registered on every call (``self.child.register_forward_hook(fn)`` inside ``forward``,
``register_forward_pre_hook``, ``register_full_backward_hook``, or torch's global
``register_module_forward_hook``): hooks pile up, each holding what its closure holds, and each
runs on every later call. The edit keeps the handle and removes the previous call's hook before
registering again: one hook stays registered, it still fires once per call, with this call's
closure, so what the hook does survives."""

from __future__ import annotations

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._containers import reachable
from bisector.fixers.base import LEAK, PYTHON_LEAKS, Candidate, Example, FixTarget, SourceEdit

HOOKS = (
    "register_forward_hook",
    "register_forward_pre_hook",
    "register_full_backward_hook",
    "register_full_backward_pre_hook",
    "register_backward_hook",
    "register_module_forward_hook",
    "register_module_forward_pre_hook",
    "register_module_full_backward_hook",
    "register_hook",  # a tensor's or a parameter's
)


class HookOnce:
    name = "hook-once"
    family = PYTHON_LEAKS
    description = "a hook registered on every forward call: remove the previous call's before registering again"
    stages = ("eager", "export")
    kinds = (LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        # The culprit is often the hooked module (torch's Conv2d), not the code that registers the
        # hook: every class of the user's code whose forward (or what it calls) registers one.
        reach: set[str] = set()
        for source in target.sources.values():
            module = _cst.parse(source)
            for cls in _cst.classes(module) if module is not None else []:
                if _cst.method(cls, "forward") is not None:
                    reach |= reachable(target.sources, cls.name.value, roots=("forward",))
        out = []
        for path, source in target.sources.items():
            after, sites = once(source, reach)
            if not sites:
                continue
            out.append(
                Candidate(
                    self.name,
                    f"{', '.join(sites)}: keep the hook's handle and remove the previous call's hook before "
                    "registering again (one stays registered and still fires once per call)",
                    edits=(SourceEdit(path, source, after, f"register once: {', '.join(sites)}"),),
                    size=2 * len(sites),
                )
            )
        return out

    examples = (
        Example(
            "a forward that hooks its child on every call",
            FixTarget(
                "eager",
                LEAK,
                region_type="torch.nn.modules.conv.Conv2d",
                sources={
                    "m.py": (
                        "import torch\n\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
                        "        super().__init__()\n        self.conv = torch.nn.Conv2d(3, 8, 3)\n"
                        "        self.seen = 0\n\n    def count(self, m, args, out):\n        self.seen += 1\n\n"
                        "    def forward(self, x):\n        self.conv.register_forward_hook(self.count)\n"
                        "        return self.conv(x)\n"
                    )
                },
            ),
            True,
            "_bisector_forward_hook",
            edited=(
                "import torch\n\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
                "        super().__init__()\n        self.conv = torch.nn.Conv2d(3, 8, 3)\n        self.seen = 0\n\n"
                "    def count(self, m, args, out):\n        self.seen += 1\n\n"
                "    def forward(self, x):\n"
                "        if getattr(self, '_bisector_forward_hook', None) is not None:\n"
                "            self._bisector_forward_hook.remove()  # the previous call's: one stays registered\n"
                "        self._bisector_forward_hook = self.conv.register_forward_hook(self.count)\n"
                "        return self.conv(x)\n",
            ),
        ),
        Example(
            "a pre-hook and a global module hook registered in a helper method forward calls",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Block",
                sources={
                    "m.py": (
                        "import torch\nfrom torch.nn.modules.module import register_module_forward_hook\n\n\n"
                        "class Block(torch.nn.Module):\n    def _watch(self, log):\n"
                        "        self.lin.register_forward_pre_hook(lambda m, a: log.append(a[0].shape))\n"
                        "        register_module_forward_hook(lambda m, a, o: None)\n\n"
                        "    def forward(self, x):\n        log = []\n        self._watch(log)\n"
                        "        return self.lin(x)\n"
                    )
                },
            ),
            True,
            "register_forward_pre_hook",
            edited=(
                "import torch\nfrom torch.nn.modules.module import register_module_forward_hook\n\n\n"
                "class Block(torch.nn.Module):\n    def _watch(self, log):\n"
                "        if getattr(self, '_bisector__watch_hook', None) is not None:\n"
                "            self._bisector__watch_hook.remove()  # the previous call's: one stays registered\n"
                "        self._bisector__watch_hook = self.lin.register_forward_pre_hook(lambda m, a: "
                "log.append(a[0].shape))\n"
                "        if getattr(self, '_bisector__watch_hook_2', None) is not None:\n"
                "            self._bisector__watch_hook_2.remove()  # the previous call's: one stays registered\n"
                "        self._bisector__watch_hook_2 = register_module_forward_hook(lambda m, a, o: None)\n\n"
                "    def forward(self, x):\n        log = []\n        self._watch(log)\n"
                "        return self.lin(x)\n",
            ),
        ),
        Example(
            "a hook registered once in __init__",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": (
                        "class Net:\n    def __init__(self):\n        self.conv.register_forward_hook(print)\n\n"
                        "    def forward(self, x):\n        return self.conv(x)\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a hook removed in the same call",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": (
                        "class Net:\n    def forward(self, x):\n        h = self.conv.register_forward_hook(print)\n"
                        "        y = self.conv(x)\n        h.remove()\n        return y\n"
                    )
                },
            ),
            False,
        ),
    )


def once(source: str, reach: set[str]) -> tuple[str, list[str]]:
    """Each hook registered as a statement in a method of reach, registered with its handle kept on
    self and the previous one removed first. Returns the source and the sites ("Net.forward")."""
    module = _cst.parse(source)
    if module is None:
        return source, []
    sites: list[str] = []

    class T(_cst.ScopedTransformer):
        def __init__(self) -> None:
            super().__init__()
            self.methods: list[bool] = []
            self.count: dict[str, int] = {}

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            super().visit_FunctionDef(node)
            params = node.params.params
            self.methods.append(bool(params) and params[0].name.value == "self")

        def leave_FunctionDef(self, o: cst.FunctionDef, u: cst.FunctionDef) -> cst.FunctionDef:
            self.methods.pop()
            return super().leave_FunctionDef(o, u)

        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            where = ".".join(self.stack)
            if not self.methods or not self.methods[-1] or where not in reach or len(u.body) != 1:
                return u
            stmt = u.body[0]
            if not (isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call)):
                return u
            func = stmt.value.func
            name = func.attr.value if isinstance(func, cst.Attribute) else _cst.dotted(func).rsplit(".", 1)[-1]
            if name not in HOOKS:
                return u
            fn = self.stack[-1]
            n = self.count[fn] = self.count.get(fn, 0) + 1
            attr = f"self._bisector_{fn}_hook" + (f"_{n}" if n > 1 else "")
            call = cst.Module(body=[]).code_for_node(stmt.value)
            new = cst.parse_module(
                f"if getattr(self, '{attr[5:]}', None) is not None:\n"
                f"    {attr}.remove()  # the previous call's: one stays registered\n"
                f"{attr} = {call}\n"
            ).body
            if where not in sites:
                sites.append(where)
            first = new[0].with_changes(leading_lines=u.leading_lines)
            return cst.FlattenSentinel([first, *new[1:]])

    return module.visit(T()).code, sites


FIXER = HookOnce()
