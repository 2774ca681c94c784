#!/usr/bin/env python
"""The whole ONNX backend test corpus through cleanup, fuse and fp16 (issue 18's peer corpus).

    python bench/onnx_corpus_bench.py [--pipelines "cleanup;fuse;quantize{mode=fp16}"] [--no-doc]

Every operator case ``onnx.backend.test.case.node`` generates and every model case the onnx
wheel ships (simple, pytorch-converted, pytorch-operator) runs through each pipeline with
its own inputs as the data; the artifact is run on those inputs and compared with the
reference outputs (tests/onnx_corpus.py says how each outcome is decided). The counts go to
the section "## ONNX backend test corpus" of docs/benchmarks.md, with every case that was
not ``ok`` or ``excluded`` listed below the table.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # onnx_corpus.py: shared with the tests
import onnx_corpus
from fuse_bench import publish

SECTION = "## ONNX backend test corpus"
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--pipelines", default="cleanup;fuse;quantize{mode=fp16}", help="';'-separated pipelines")
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    args = parser.parse_args(argv)
    pipelines = args.pipelines.split(";")
    start = time.perf_counter()
    cases = onnx_corpus.node_cases() + onnx_corpus.data_cases()
    results = onnx_corpus.run_cases(cases, pipelines)
    seconds = time.perf_counter() - start
    counts = onnx_corpus.counts(results)
    outcomes = onnx_corpus.OUTCOMES
    table = ["| pipeline | " + " | ".join(outcomes) + " |", "|---|" + "---|" * len(outcomes)]
    table += [f"| `{p}` | " + " | ".join(str(counts[p][o]) for o in outcomes) + " |" for p in pipelines]
    listed = [r for r in results if r.outcome not in ("ok", "excluded")]
    table += ["", *(f"- `{r.pipeline}` {r.case}: {r.outcome}: {r.detail[:160]}" for r in listed)] if listed else []
    description = (f"{len(cases)} cases of onnx {onnx.__version__}'s backend test data; `excluded`: ONNX Runtime itself "
                   "fails the original case. Outcomes are defined in tests/onnx_corpus.py.")
    command = "python bench/onnx_corpus_bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    publish(SECTION, command, seconds, description, table, None if args.no_doc else DOC)
    return 1 if any(r.outcome in ("wrong", "crash") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
