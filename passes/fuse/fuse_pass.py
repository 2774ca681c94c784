"""``fuse``: exact rewrites that make the model smaller and faster on the target backend.

Order of work (each step keeps outputs equal within float tolerance):
1. infer shapes, fold constants and sweep dead code and duplicates;
2. transformer blocks into the backend's fused ops (transformer.py), when it has them;
3. until nothing changes (at most ``iterations`` rounds): every enabled rule of
   catalogue.NEUTRAL_RULES and catalogue.BACKEND_RULES, then fold and sweep again;
4. with ``explain``: for each enabled rule, where its pattern matched but a check refused,
   the reason goes into the pass notes (and so the report).
5. Before the rules run: where a rule the backend would run is blocked only by the model's
   old ai.onnx opset and the model has its pattern, convert the model to the opset it needs
   (``upgrade_opset``, on by default; exact: onnx's version converter rewrites op forms,
   and the pipeline checks the outputs). PP-OCR cls at opset 11 has 18 HardSwish patterns
   and runs 1.4x faster on ONNX Runtime CPU after the upgrade; on OpenVINO it was as fast.
   Where the upgrade is off or cannot be done (the converter fails, or the weights in memory
   are too big to copy through protobuf), the blocked rules are a warning naming the opset
   that would unlock them.
Rules whose ops the backend lacks, that would make an op the backend says is slow
(``Capabilities.slow_ops``), or whose standard op needs a newer opset, are skipped with a
note saying so.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import onnx_ir as ir
from onnxscript.rewriter import MatchingTracer, MatchStatus, RewriteRuleSet

from onnxsmith.context import Context
from onnxsmith.errors import first_line
from onnxsmith.graph_stats import graph_signature
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.passes.fuse.catalogue import BACKEND_RULES, NEUTRAL_RULES, RULES, TRANSFORMER_RULES, FuseRule
from onnxsmith.passes.fuse.sweep import fold_and_sweep
from onnxsmith.passes.fuse.transformer import fuse_transformer_blocks
from onnxsmith.passes.opset import convert_opset, replace_model
from onnxsmith.registry import register_pass
from onnxsmith.shape_inference import infer_shapes

__all__ = ["FusePass"]

MAX_EXPLANATIONS_PER_RULE = 3
UPGRADE_MAX_BYTES = 256 * 1024 * 1024  # the version converter copies the weights held in memory through protobuf


@register_pass
@dataclasses.dataclass(frozen=True)
class FusePass(Pass):
    name = "fuse"
    summary = "Exact fusions for the target backend: folding, no-ops, Conv+BN, transformer blocks, activations."
    atol = 1e-4  # fused kernels (attention, FusedConv, QuickGelu) reorder float arithmetic

    disable: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "rules not to run, e.g. [attention,silu]"})
    only: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "run only these rules (default: all)"})
    iterations: int = dataclasses.field(default=4, metadata={"doc": "rounds of rule application (stops when nothing changes)"})
    explain: bool = dataclasses.field(default=True, metadata={"doc": "report why rules that matched refused to fire"})
    upgrade_opset: bool = dataclasses.field(default=True, metadata={
        "doc": "convert to the newer ai.onnx opset that rules whose patterns the model has need (exact); off: only warn"})

    def __post_init__(self) -> None:
        unknown = [n for n in [*self.disable, *self.only] if n not in RULES]
        if unknown:
            raise ValueError(f"unknown fuse rule '{unknown[0]}'; rules: {', '.join(RULES)}")
        if self.iterations < 1:
            raise ValueError("iterations must be at least 1")

    @classmethod
    def catalogue(cls) -> dict[str, str]:
        return {r.name: r.doc + (f" [needs {', '.join(r.needs_ops)}]" if r.needs_ops else "") for r in RULES.values()}

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        before = graph_signature(model)
        counts: Counter[str] = Counter()
        infer_shapes(model)  # rules check ranks and dims of intermediate values
        fold_and_sweep(model)
        blocked = _blocked_matches(model, self._blocked_by_opset(model, ctx))
        upgrade_notes: list[str] = []
        if blocked and self.upgrade_opset:
            blocked, upgrade_notes = _upgrade(model, blocked, counts)
        active, notes = self._select(model, ctx)
        notes = upgrade_notes + notes
        transformer = {r.name for r in TRANSFORMER_RULES if r.name in active}
        if transformer:
            counts.update(fuse_transformer_blocks(model, transformer))
        rounds = [r for r in (*NEUTRAL_RULES, *BACKEND_RULES) if r.name in active]
        for _ in range(self.iterations):
            fired = 0
            for rule in rounds:
                n = RewriteRuleSet(list(rule.rules)).apply_to_model(model)
                counts[rule.name] += n
                fired += n
            fold_and_sweep(model)
            if not fired:
                break
        if self.explain:
            notes.extend(_explain(model, [RULES[name] for name in active if RULES[name].explain]))
        return PassResult(
            model,
            modified=graph_signature(model) != before,
            counts={name: n for name, n in sorted(counts.items()) if n},
            notes=notes,
            warnings=[_opset_warning(rule, matches, _opset(model), self.upgrade_opset) for rule, matches in blocked],
        )

    def _blocked_by_opset(self, model: ir.Model, ctx: Context) -> list[FuseRule]:
        """The selected rules that only the model's old ai.onnx opset keeps from running."""
        active, _ = self._select(model, ctx, ignore_opset=True)
        return [RULES[name] for name in active if RULES[name].min_opset > _opset(model)]

    def _select(self, model: ir.Model, ctx: Context, *, ignore_opset: bool = False) -> tuple[list[str], list[str]]:
        """Rules to run, and a note for each one skipped because of the backend or opset
        (``ignore_opset``: the rules the backend allows whatever the model's opset)."""
        capabilities = ctx.backend.capabilities if ctx.backend is not None else None
        backend_ops = capabilities.ops if capabilities is not None else frozenset()
        slow_ops = capabilities.slow_ops if capabilities is not None else frozenset()
        backend_name = ctx.backend.name if ctx.backend is not None else "none"
        opset = 10**6 if ignore_opset else _opset(model)
        active, notes = [], []
        for rule in RULES.values():
            if rule.name in self.disable or (self.only and rule.name not in self.only):
                continue
            missing = [op for op in rule.needs_ops if op not in backend_ops]
            slow = [op for op in rule.makes if op in slow_ops]
            if missing:
                notes.append(f"rule '{rule.name}' skipped: backend '{backend_name}' has no kernel for {', '.join(missing)}")
            elif slow:
                notes.append(f"rule '{rule.name}' skipped: backend '{backend_name}' runs {', '.join(slow)} slower than the ops it replaces")
            elif rule.avoids and not all(op in slow_ops for op in rule.avoids):
                notes.append(f"rule '{rule.name}' skipped: only for backends whose {', '.join(rule.avoids)} is slow")
            elif opset < rule.min_opset:
                notes.append(f"rule '{rule.name}' skipped: it needs ai.onnx opset {rule.min_opset}, the model has {opset} (run opset{{version={rule.min_opset}}} first)")
            else:
                active.append(rule.name)
        return active, notes


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def _blocked_matches(model: ir.Model, rules: list[FuseRule]) -> list[tuple[FuseRule, int]]:
    """Each of ``rules`` whose pattern the model's main graph has, with its number of matches
    (matched without rewriting anything, as if the model were at the rule's opset)."""
    found = []
    domain = "" if "" in model.opset_imports else "ai.onnx"
    opset = _opset(model)
    for rule in rules:
        model.opset_imports[domain] = rule.min_opset  # as if upgraded: some rules check the opset they write for
        try:
            matches = sum(1 for node in list(model.graph) if any(r.try_rewrite(model, model.graph, node) is not None for r in rule.rules))
        finally:
            model.opset_imports[domain] = opset
        if matches:
            found.append((rule, matches))
    return found


def _upgrade(model: ir.Model, blocked: list[tuple[FuseRule, int]], counts: Counter[str]) -> tuple[list[tuple[FuseRule, int]], list[str]]:
    """Convert ``model`` in place to the opset the ``blocked`` rules need, where their patterns
    survive the conversion; the rules still blocked (all of them where it could not) and a
    note saying what happened."""
    opset, version = _opset(model), max(rule.min_opset for rule, _ in blocked)
    names = ", ".join(f"'{rule.name}' ({matches} match(es))" for rule, matches in blocked)
    if _bytes_in_memory(model) > UPGRADE_MAX_BYTES:
        return blocked, [(f"opset not upgraded for {names}: the version converter would copy the weights through protobuf "
                          f"(above {UPGRADE_MAX_BYTES >> 20} MiB in memory)")]
    try:
        converted = convert_opset(model, version)
    except Exception as e:  # noqa: BLE001 (the converter raises RuntimeError or bare C++ errors: a warning, not a failure)
        return blocked, [f"opset not upgraded for {names}: onnx's version converter failed from {opset} to {version}: {first_line(e)}"]
    # the converter rewrites old op forms into what they meant (a Softmax over an inner axis
    # before opset 13 becomes Flatten, Softmax, Reshape): upgrade only for patterns that remain
    infer_shapes(converted)
    if not _blocked_matches(converted, [rule for rule, _ in blocked]):
        return [], [(f"opset not upgraded for {names}: after the conversion to {version} the patterns are gone "
                     "(the converter rewrites old op forms)")]
    replace_model(model, converted)
    counts["opset_upgraded_to"] = version
    return [], [f"converted from ai.onnx opset {opset} to {version} to run rule(s) {names}, which need it"]


def _bytes_in_memory(model: ir.Model) -> int:
    """Bytes of the weights loaded in memory (not those still in their files)."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None and not isinstance(v.const_value, ir.ExternalTensor))


def _opset_warning(rule: FuseRule, matches: int, opset: int, upgrade: bool) -> str:
    """What the user can do about a rule the model's old opset blocks."""
    how = ("the upgrade was not possible (the notes say why): run opset{version=17} before fuse"
           if upgrade else "drop upgrade_opset=false, or run opset{version=17} before fuse")
    return (f"{matches} match(es) of rule '{rule.name}' ({rule.doc}) stay unfused: it needs ai.onnx opset "
            f"{rule.min_opset} and the model is at {opset}; {how}, or optimize --auto, which times both")


def _refused(match) -> bool:
    """A whole pattern matched, but a check, the replacement or other uses of its nodes stopped it."""
    if match.status in (MatchStatus.CONDITION_FAILED, MatchStatus.REPLACEMENT_FAILED):
        return True
    return match.status == MatchStatus.NO_MATCH and "have other uses" in (match.match_result.reason or "")


def _explain(model: ir.Model, rules: list[FuseRule]) -> list[str]:
    """Why rules whose whole pattern matched did not fire (their check's reason)."""
    notes = []
    for rule in rules:
        tracer = MatchingTracer()
        RewriteRuleSet(list(rule.rules)).apply_to_model(model, tracer=tracer)
        refused = [match for matches in tracer.best_matches_map.values() for match in matches if _refused(match)]
        for match in refused[:MAX_EXPLANATIONS_PER_RULE]:
            reason = match.match_result.reason or "its check failed"
            notes.append(f"rule '{rule.name}' matched at {match.root_node.op_type} node '{match.root_node.name}' but refused: {reason}")
        if len(refused) > MAX_EXPLANATIONS_PER_RULE:
            notes.append(f"rule '{rule.name}' refused {len(refused) - MAX_EXPLANATIONS_PER_RULE} more matches")
    return notes
