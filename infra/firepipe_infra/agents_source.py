"""What firepipe's agents expect of their deployment, read from firepipe's sources as text (the
infra app has an environment of its own without firepipe, as for env_names.py): the agents and
the queue each reads, the events topic's subscriptions with their filter policies, the Lambda
handlers, the worker's command and the Powertools service name.

A constant a module assigns from another (`messages.SCORES_QUEUE`) is resolved through that
module, so the queue names are firepipe's own values, not copies of them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FIREPIPE = Path(__file__).resolve().parents[2] / "firepipe"
MESSAGES = FIREPIPE / "core" / "agents" / "messages.py"
RUNTIME = FIREPIPE / "services" / "agents" / "runtime.py"
LAMBDAS = FIREPIPE / "services" / "agents" / "lambdas.py"
WORKER = FIREPIPE / "services" / "agents" / "worker.py"
OBSERVABILITY = FIREPIPE / "services" / "agents" / "observability.py"
LAMBDAS_MODULE = "firepipe.services.agents.lambdas"
WORKER_MODULE = "firepipe.services.agents.worker"
ESCALATE_HANDLER = "escalate"


@dataclass(frozen=True)
class AgentsSource:
    agents: tuple[str, ...]  # runtime.AGENTS
    queue_of: dict[str, str]  # agent -> the short name of the queue it reads
    subscriptions: dict[str, dict[str, list[str]]]  # queue -> filter policy (attribute: values)
    handlers: dict[str, str]  # agent (and "escalate") -> the Lambda handler's dotted path
    service: str  # Powertools' service name
    namespace: str  # the CloudWatch metrics namespace
    max_receives_var: str  # FIREPIPE_MAX_RECEIVES

    def worker_command(self, agent: str) -> list[str]:
        """The ECS worker's command (worker.py's CLI: one argument, the agent)."""
        if agent not in self.agents:
            raise KeyError(f"no agent {agent!r}: one of {', '.join(self.agents)}")
        return ["python", "-m", WORKER_MODULE, agent]


class _Inline(ast.NodeTransformer):
    """`messages.X` and the module's own constants replaced by their values."""

    def __init__(self, constants: dict[str, object], imported: dict[str, dict[str, object]]):
        self.constants, self.imported = constants, imported

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Constant(self.constants[node.id]) if node.id in self.constants else node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id in self.imported:
            return ast.Constant(self.imported[node.value.id][node.attr])
        return self.generic_visit(node)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _assigned(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level `NAME = value` assignments (annotated ones too)."""
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            found[target.id] = value
    return found


def _constants(path: Path) -> dict[str, object]:
    """The module's plain constants (strings, numbers)."""
    return {
        name: value.value
        for name, value in _assigned(_tree(path)).items()
        if isinstance(value, ast.Constant) and isinstance(value.value, (str, int, float))
    }


def _literal(node: ast.AST, inline: _Inline, where: Path) -> object:
    try:
        return ast.literal_eval(inline.visit(node))
    except (KeyError, ValueError) as error:
        raise ValueError(f"{where}: cannot read {ast.unparse(node)!r}: {error}") from None


def _subscriptions(tree: ast.Module, inline: _Inline) -> dict[str, dict[str, list[str]]]:
    """The `topic.subscribe(queue, policy)` calls of runtime.py's `wire` (what a local run
    subscribes; in AWS the CDK app makes the same subscriptions)."""
    [wire] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "wire"]
    found: dict[str, dict[str, list[str]]] = {}
    for node in ast.walk(wire):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "subscribe"
        ):
            queue, policy = (_literal(arg, inline, RUNTIME) for arg in node.args)
            if not isinstance(queue, str) or not isinstance(policy, dict):
                raise ValueError(f"{RUNTIME}: subscribe({queue!r}, {policy!r}) is not understood")
            for attribute, values in policy.items():
                if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                    # Other SNS operators (prefix, anything-but, exists) would need a filter
                    # of their own here.
                    raise ValueError(f"{RUNTIME}: filter {attribute}={values!r} is not a list")
            found[queue] = policy
    if not found:
        raise ValueError(f"{RUNTIME}: `wire` subscribes no queue")
    return found


@cache
def read_agents_source() -> AgentsSource:
    messages = _constants(MESSAGES)
    runtime_tree = _tree(RUNTIME)
    runtime = _assigned(runtime_tree)
    inline = _Inline(_constants(RUNTIME), {"messages": messages})
    agents = _literal(runtime["AGENTS"], inline, RUNTIME)
    queue_of = _literal(runtime["QUEUE_OF"], inline, RUNTIME)
    if not isinstance(agents, tuple) or not isinstance(queue_of, dict):
        raise ValueError(f"{RUNTIME}: AGENTS must be a tuple and QUEUE_OF a dict")
    if set(queue_of) != set(agents):
        raise ValueError(f"{RUNTIME}: QUEUE_OF names {sorted(queue_of)}, AGENTS {agents}")
    # The handlers lambdas.py defines at module level, by the names the functions run.
    defined = set(_assigned(_tree(LAMBDAS))) | {
        n.name for n in _tree(LAMBDAS).body if isinstance(n, ast.FunctionDef)
    }
    handlers = {}
    for name in (*agents, ESCALATE_HANDLER):
        if name not in defined:
            raise ValueError(f"{LAMBDAS} defines no handler {name!r}")
        handlers[name] = f"{LAMBDAS_MODULE}.{name}"
    if not WORKER.exists():
        raise ValueError(f"no worker module {WORKER}")
    observability = _constants(OBSERVABILITY)
    runtime_constants = _constants(RUNTIME)
    return AgentsSource(
        agents=agents,
        queue_of=queue_of,
        subscriptions=_subscriptions(runtime_tree, inline),
        handlers=handlers,
        service=str(observability["SERVICE"]),
        namespace=str(observability["NAMESPACE"]),
        max_receives_var=str(runtime_constants["MAX_RECEIVES_VAR"]),
    )
