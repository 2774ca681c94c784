"""``onnxsmith batch``: real worker processes, a real ledger, real kills, and a real local Ray."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from conftest import FIXTURES, ROOT, fixture_feeds, ort_outputs, run_cli

from onnxsmith.batch.jobs import discover_jobs
from onnxsmith.batch.ledger import Ledger
from onnxsmith.batch.outcome import Outcome
from onnxsmith.batch.worker import WorkerSettings
from onnxsmith.modelio import hash_files
from onnxsmith.recipe import validate_recipe

TESTS = ROOT / "tests"
GOOD = {"a/cnn.onnx": "cnn", "a/b/mlp.onnx": "mlp", "transformer.onnx": "transformer", "ext/external.onnx": "external",
        "old/opset11.onnx": "opset11", "a/b/c/mlp_again.onnx": "mlp"}  # with the 2 broken ones: the zoo of 8


def make_zoo(root: Path, models: dict[str, str] = GOOD, broken: bool = True) -> Path:
    """Fixture models in a tree of subfolders (external data beside its model), plus two broken ones."""
    for rel, name in models.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / f"{name}.onnx", root / rel)
        if (FIXTURES / f"{name}.onnx.data").exists():
            shutil.copy(FIXTURES / f"{name}.onnx.data", (root / rel).parent / f"{name}.onnx.data")
    if broken:
        (root / "broken").mkdir()
        (root / "broken/truncated.onnx").write_bytes((FIXTURES / "cnn.onnx").read_bytes()[:20000])
        node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                                    ir_version=10), root / "broken/unknown_op.onnx")
    return root


def ledger_rows(outdir: Path) -> dict[str, dict]:
    db = sqlite3.connect(outdir / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        return {row["path"]: dict(row) for row in db.execute("SELECT * FROM models")}
    finally:
        db.close()


def temporaries(outdir: Path) -> list[Path]:
    return [p for p in outdir.rglob("*") if p.name.startswith(".onnxsmith-") or p.name.endswith(".tmp")]


def by_path(summary: dict) -> dict[str, dict]:
    return {m["path"]: m for m in summary["models"]}


def test_folder_batch_converts_good_models_records_failures_and_resumes(tmp_path):
    zoo, out = make_zoo(tmp_path / "zoo"), tmp_path / "out"
    step = tmp_path / "step_summary.md"
    result = run_cli("batch", str(zoo), "-o", str(out), "-j", "2", "--latency-rounds", "2", "--json",
                     env={"GITHUB_STEP_SUMMARY": str(step)})
    assert result.code == 6, result.stderr  # two models failed: not 1, which is a bug of ours
    summary = result.json()
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 6, "failed": 2, "skipped": 0}
    models = by_path(summary)
    assert "not a readable ONNX model" in models["broken/truncated.onnx"]["error"]
    assert "Frobnicate" in models["broken/unknown_op.onnx"]["error"]
    for rel, name in GOOD.items():
        m = models[rel]
        assert m["status"] == "ok" and m["error"] is None and m["attempts"] == 1
        sources = [zoo / rel, *(p for p in [(zoo / rel).parent / f"{name}.onnx.data"] if p.exists())]
        assert m["bytes_before"] == sum(p.stat().st_size for p in sources)
        assert m["bytes_after"] > 0 and m["latency_ratio"] > 0 and m["drift"] < 1e-4
        assert 0 < m["latency_ratio_p25"] <= m["latency_ratio_p75"]  # the spread of the rounds beside the ratio
        assert (out / rel).is_file() and (out / rel).with_suffix(".report.json").is_file()  # mirrors its path under SOURCE
    assert (out / "ext/external.onnx.data").is_file()
    feeds = fixture_feeds("cnn", 2)
    for want, got in zip(ort_outputs(FIXTURES / "cnn.onnx", feeds), ort_outputs(out / "a/cnn.onnx", feeds)):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
    assert not (out / "broken/truncated.onnx").exists()

    md = (out / "summary.md").read_text()
    assert re.search(r"\| `a/b/mlp.onnx` \| ok \| [^|]+ \| \d+\.\d\dx \(\d+\.\d\d-\d+\.\d\d\) \|", md), md
    assert "6 ok, 2 failed, 0 skipped" in md and "| `a/b/mlp.onnx` | ok |" in md and "| `broken/truncated.onnx` | failed |" in md
    step_md = step.read_text()  # the CI step summary: the same table under a section naming the batch and its passes
    assert step_md.startswith(f"### onnxsmith batch: `{out}`") and "Passes: `cleanup`." in step_md
    assert "| `broken/truncated.onnx` | failed |" in step_md
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["path"], r["status"]) for r in rows] == [(m["path"], m["status"]) for m in summary["models"]]
    assert float(rows[0]["bytes_after"]) == summary["models"][0]["bytes_after"]

    ledger = ledger_rows(out)
    assert {k: r["status"] for k, r in ledger.items()} == {k: m["status"] for k, m in models.items()}
    assert ledger["ext/external.onnx"]["model_hash"] == hash_files([zoo / "ext/external.onnx", zoo / "ext/external.onnx.data"])
    resolved = validate_recipe({"passes": ["cleanup"]}).resolved()
    artifact_keys = {k: v for k, v in resolved.items() if k not in ("description", "resources")}
    assert ledger["a/cnn.onnx"]["recipe_hash"] == hashlib.sha256(
        json.dumps(artifact_keys, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert ledger["broken/truncated.onnx"]["error"] == models["broken/truncated.onnx"]["error"]
    assert ledger["a/cnn.onnx"]["bytes_after"] == models["a/cnn.onnx"]["bytes_after"]
    assert not temporaries(out)

    mtime = (out / "a/cnn.onnx").stat().st_mtime_ns
    again = run_cli("batch", str(zoo), "-o", str(out), "--allow-failures", "--json")
    assert again.code == 0, again.stderr
    assert again.json()["counts"] == {"ok": 0, "failed": 2, "skipped": 6}
    assert by_path(again.json())["a/cnn.onnx"]["bytes_after"] == models["a/cnn.onnx"]["bytes_after"]  # from the ledger
    assert (out / "a/cnn.onnx").stat().st_mtime_ns == mtime  # not converted again


def test_manifest_isolates_hang_crash_and_memory_and_retries_a_crash(tmp_path):
    shutil.copy(FIXTURES / "cnn.onnx", tmp_path / "cnn.onnx")
    manifest = tmp_path / "zoo.yaml"
    manifest.write_text(yaml.safe_dump({"models": [
        {"model": "batch_models:hang", "input_shape": ["1x4"]},
        {"model": "cnn.onnx", "passes": "cleanup,opset{version=21}"},
        {"model": "batch_models:crash", "input_shape": ["1x4"]},
        {"model": "batch_models:hog", "input_shape": ["1x4"]},
        {"model": "batch_models:flaky", "input_shape": ["1x4"], "output": "tiny/flaky.onnx"},
    ]}))
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(TESTS), "BATCH_FLAKY_MARKER": str(tmp_path / "flaky-crashed-once")}
    # 30 s: enough for the other models' torch import and export on a loaded 2-core machine
    result = run_cli("batch", str(manifest), "-o", str(out), "-j", "2", "--timeout", "30", "--memory-limit", "3000",
                     "--retries", "1", "--latency-rounds", "2", "--json", env=env)
    assert result.code == 6, result.stderr
    models = by_path(result.json())
    assert result.json()["counts"] == {"ok": 2, "failed": 3, "skipped": 0}, [(m["path"], m["error"]) for m in result.json()["models"]]

    hang = models["batch_models.hang.onnx"]
    assert hang["status"] == "failed" and hang["error"] == "timed out after 30 s (--timeout)" and hang["attempts"] == 1
    assert 30 <= hang["seconds"] < 60
    crash = models["batch_models.crash.onnx"]
    assert crash["status"] == "failed" and crash["attempts"] == 2  # a crash is retried once, then recorded
    assert crash["error"].startswith("worker crashed (exited with code 3 without a result)")
    hog = models["batch_models.hog.onnx"]
    assert hog["status"] == "failed" and hog["attempts"] == 1
    assert hog["error"].startswith("out of memory") and "3000 MiB" in hog["error"]
    flaky = models["tiny/flaky.onnx"]
    assert flaky["status"] == "ok" and flaky["attempts"] == 2 and (out / "tiny/flaky.onnx").is_file()

    cnn = models["cnn.onnx"]
    assert cnn["status"] == "ok"
    report = json.loads((out / "cnn.report.json").read_text())
    assert [p["name"] for p in report["passes"]] == ["cleanup", "opset"]  # the per-model override
    assert ledger_rows(out)["batch_models.crash.onnx"]["attempts"] == 2


def test_sigkill_of_the_batch_kills_its_workers_and_a_rerun_finishes_the_rest(tmp_path):
    models = {"m1/cnn.onnx": "cnn", "m2/mlp.onnx": "mlp", "m4/transformer.onnx": "transformer", "m5/external.onnx": "external"}
    zoo = make_zoo(tmp_path / "zoo", models, broken=False)
    entries = [{"model": rel} for rel in list(models)[:2]]
    entries.append({"model": "batch_models:pause", "input_shape": ["1x4"], "output": "m3/paused.onnx"})
    entries += [{"model": rel} for rel in list(models)[2:]]
    manifest = zoo / "zoo.yaml"
    manifest.write_text(yaml.safe_dump(entries))
    out, pidfile = tmp_path / "out", tmp_path / "worker.pid"
    args = [sys.executable, "-m", "onnxsmith", "batch", str(manifest), "-o", str(out), "-j", "1", "--latency-rounds", "2"]
    env = {**os.environ, "PYTHONPATH": str(TESTS), "BATCH_PAUSE_PIDFILE": str(pidfile)}
    batch = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        worker_pid = _wait_for_pid(pidfile, batch)
    finally:
        batch.kill()  # SIGKILL: no handler, no cleanup in the batch itself
        batch.wait()
    _wait_until_dead(worker_pid)  # the worker died with its batch, not orphaned

    ledger = ledger_rows(out)
    assert {k: r["status"] for k, r in ledger.items()} == {"m1/cnn.onnx": "ok", "m2/mlp.onnx": "ok", "m3/paused.onnx": "running"}
    assert not (out / "m3/paused.onnx").exists() and not (out / "m4").exists()
    # What a worker killed inside save_onnx leaves: a temporary folder beside the artifact.
    (out / "m3/.onnxsmith-abcd1234").mkdir(parents=True)
    (out / "m3/.onnxsmith-abcd1234/paused.onnx").write_bytes(b"half")
    mtime = (out / "m1/cnn.onnx").stat().st_mtime_ns

    rerun = run_cli("batch", str(manifest), "-o", str(out), "-j", "1", "--latency-rounds", "2", "--json",
                    env={"PYTHONPATH": str(TESTS), "BATCH_PAUSE_PIDFILE": ""})
    assert rerun.code == 0, rerun.stderr
    statuses = {m["path"]: m["status"] for m in rerun.json()["models"]}
    assert statuses == {"m1/cnn.onnx": "skipped", "m2/mlp.onnx": "skipped", "m3/paused.onnx": "ok",
                        "m4/transformer.onnx": "ok", "m5/external.onnx": "ok"}
    assert (out / "m1/cnn.onnx").stat().st_mtime_ns == mtime
    assert {r["status"] for r in ledger_rows(out).values()} == {"ok"}
    assert not temporaries(out)
    assert (out / "m5/external.onnx.data").is_file()


def _wait_for_pid(pidfile: Path, batch: subprocess.Popen, limit_s: float = 90) -> int:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert batch.poll() is None, "the batch ended before the paused model started"
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text:
            return int(text)
        time.sleep(0.1)
    raise AssertionError("the paused model never started")


def _wait_until_dead(pid: int, limit_s: float = 15) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
        except FileNotFoundError:
            return
        if "Z" in state.split()[1]:  # a zombie no init reaped yet: dead all the same
            return
        time.sleep(0.1)
    raise AssertionError(f"worker {pid} outlived its batch")


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    missing = run_cli("batch", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out"))
    assert missing.code == 2 and missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert missing.stderr.startswith("error: batch source not found")

    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump([{"modle": "x.onnx"}]))
    bad = run_cli("batch", str(manifest), "-o", str(tmp_path / "out"))
    assert bad.code == 2 and "bad.yaml, entry 1: unknown key 'modle'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    zoo = make_zoo(tmp_path / "zoo", {"cnn.onnx": "cnn"}, broken=False)
    unknown = run_cli("batch", str(zoo), "-o", str(tmp_path / "out"), "--passes", "nosuchpass")
    assert unknown.code == 2 and "nosuchpass" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "ledger.sqlite").exists()


def test_csv_manifest_overrides_and_hashes(tmp_path):
    make_zoo(tmp_path, {"m/cnn.onnx": "cnn", "ext/external.onnx": "external"}, broken=False)
    (tmp_path / "zoo.csv").write_text(
        "model,passes,calib,input_shape,output\n"
        "m/cnn.onnx,,,,\n"
        "m/cnn.onnx,\"cleanup,opset{version=21}\",calib.npz,1x3x32x32,cnn21.onnx\n"
        "ext/external.onnx,,,,\n"
    )
    recipe = validate_recipe({"passes": ["cleanup"]})
    plain, pinned, external = discover_jobs(tmp_path / "zoo.csv", tmp_path / "out", recipe)
    assert (plain.key, plain.output) == ("m/cnn.onnx", tmp_path / "out/m/cnn.onnx")
    assert pinned.key == "cnn21.onnx" and pinned.input_shapes == ((1, 3, 32, 32),)
    assert [next(iter(p)) for p in pinned.recipe["passes"]] == ["cleanup", "opset"]
    assert pinned.recipe["calibration"]["data"] == str(tmp_path / "calib.npz")
    assert plain.model_hash == pinned.model_hash and plain.recipe_hash != pinned.recipe_hash
    before = external.model_hash
    data = tmp_path / "ext/external.onnx.data"
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\1")  # the weights changed, the .onnx did not
    assert discover_jobs(tmp_path / "zoo.csv", tmp_path / "out", recipe)[2].model_hash != before


def test_ledger_resumes_only_the_same_model_and_recipe_and_marks_stale_rows(tmp_path):
    job = discover_jobs(make_zoo(tmp_path / "zoo", {"cnn.onnx": "cnn"}, broken=False), tmp_path / "out",
                        validate_recipe({}))[0]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.mark_running(job, 1)
    assert not ledger.is_done(job)
    ledger.record(job, Outcome("ok", numbers={"drift": 0.5, "bytes_after": 7}), seconds=1.5)
    assert ledger.is_done(job)
    assert not ledger.is_done(replace(job, recipe_hash="other")) and not ledger.is_done(replace(job, model_hash="other"))
    assert ledger.row(job.key)["drift"] == 0.5 and ledger.row(job.key)["seconds"] == 1.5
    ledger.mark_running(job, 1)  # a new run of the same model starts from a clean row
    ledger.close()
    reopened = Ledger(tmp_path / "ledger.sqlite")  # as the next batch after a kill
    assert reopened.interrupt_running("stopped") == 1
    assert reopened.row(job.key)["status"] == "interrupted" and reopened.row(job.key)["drift"] is None
    reopened.close()


def test_a_model_that_fails_a_size_gate_keeps_its_artifact_and_its_numbers(tmp_path):
    zoo, out = make_zoo(tmp_path / "zoo", {"cnn.onnx": "cnn"}, broken=False), tmp_path / "out"
    result = run_cli("batch", str(zoo), "-o", str(out), "-p", "fuse", "--max-size", "1kB", "--latency-rounds", "0", "--json")
    assert result.code == 6, result.stderr
    (row,) = result.json()["models"]
    assert row["status"] == "failed" and "exceeds --max-size 1000 bytes" in row["error"]
    assert (out / "cnn.onnx").is_file() and row["bytes_after"] == (out / "cnn.onnx").stat().st_size  # written, and counted


def test_a_ledger_of_the_first_schema_gets_the_spread_columns_when_a_batch_resumes(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first = sqlite3.connect(path)  # schema 1: no latency_ratio_p25/p75
    first.execute("CREATE TABLE models (path TEXT PRIMARY KEY, source TEXT NOT NULL, model_hash TEXT NOT NULL, "
                  "recipe_hash TEXT NOT NULL, status TEXT NOT NULL, error TEXT, attempts INTEGER NOT NULL, started_at REAL NOT NULL, "
                  "finished_at REAL, seconds REAL, bytes_before INTEGER, bytes_after INTEGER, latency_before_ms REAL, "
                  "latency_after_ms REAL, latency_ratio REAL, drift REAL)")
    first.close()
    job = discover_jobs(make_zoo(tmp_path / "zoo", {"cnn.onnx": "cnn"}, broken=False), tmp_path / "out", validate_recipe({}))[0]
    ledger = Ledger(path)
    ledger.mark_running(job, 1)
    ledger.record(job, Outcome("ok", numbers={"latency_ratio": 1.2, "latency_ratio_p25": 1.1, "latency_ratio_p75": 1.3}), seconds=1)
    assert ledger.row(job.key)["latency_ratio_p25"] == 1.1 and ledger.row(job.key)["latency_ratio_p75"] == 1.3
    ledger.close()


@pytest.mark.ray
def test_ray_executor_on_a_real_local_ray(tmp_path):
    pytest.importorskip("ray")
    zoo = make_zoo(tmp_path / "zoo", {"a/cnn.onnx": "cnn", "b/mlp.onnx": "mlp"}, broken=False)
    out = tmp_path / "out"
    result = run_cli("batch", str(zoo), "-o", str(out), "--executor", "ray", "-j", "2", "--latency-rounds", "2", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["executor"] == "ray" and summary["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert (out / "a/cnn.onnx").is_file() and (out / "b/mlp.onnx").is_file()
    assert {r["status"] for r in ledger_rows(out).values()} == {"ok"}


def _probe_manifest(folder: Path, cpus: int) -> Path:
    """Two probe models (tests/batch_models.py): one as the batch says, one asking ``cpus`` CPUs."""
    manifest = folder / "zoo.yaml"
    manifest.write_text(yaml.safe_dump([
        {"model": "batch_models:probe", "input_shape": ["1x4"]},
        {"model": "batch_models:probe_cpus", "input_shape": ["1x4"], "recipe": {"resources": {"cpus": cpus}}},
    ]))
    return manifest


def _probed(folder: Path, name: str, limit_s: float = 120) -> dict:
    deadline = time.monotonic() + limit_s
    while not (folder / f"{name}.json").exists():
        assert time.monotonic() < deadline, f"the {name} model never ran"
        time.sleep(0.1)
    return json.loads((folder / f"{name}.json").read_text())


def test_two_workers_share_the_cores_and_a_recipe_can_ask_for_more_threads(tmp_path):
    manifest = _probe_manifest(tmp_path, cpus=3)
    env = {"PYTHONPATH": str(TESTS), "BATCH_PROBE_DIR": str(tmp_path)}
    result = run_cli("batch", str(manifest), "-o", str(tmp_path / "out"), "-j", "2", "--preset", "fast",
                     "--latency-rounds", "0", "--json", env=env)
    assert result.code == 0, result.stderr
    assert result.json()["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    cores = len(os.sched_getaffinity(0))
    assert _probed(tmp_path, "probe")["threads"] == max(1, cores // 2)  # not ONNX Runtime's one thread per core each
    assert _probed(tmp_path, "probe_cpus")["threads"] == 3  # resources.cpus
    report = json.loads((tmp_path / "out/batch_models.probe.report.json").read_text())
    assert [p["name"] for p in report["passes"]] == ["cleanup", "fuse"]  # --preset fast


@pytest.mark.ray
def test_ray_task_holds_the_cpus_its_recipe_asks_for(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from onnxsmith.batch.ray_executor import RayExecutor

    probes = tmp_path / "probes"
    probes.mkdir()
    for name, value in {"PYTHONPATH": str(TESTS), "BATCH_PROBE_DIR": str(probes), "BATCH_PROBE_HOLD": "1"}.items():
        monkeypatch.setenv(name, value)  # before ray.init: Ray's workers inherit the driver's environment
    _, greedy = discover_jobs(_probe_manifest(tmp_path, cpus=2), tmp_path / "out", validate_recipe({}))
    too_big = replace(greedy, recipe={**greedy.recipe, "resources": {"cpus": 3}})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # an existing Ray, as with --ray-address
    try:
        executor = RayExecutor(WorkerSettings(timeout_s=180, latency_rounds=0), tmp_path / "logs", None, None)
        try:
            executor.submit(too_big)
            job, outcome = executor.next_done()
            assert job is too_big and outcome.status == "failed"
            assert outcome.error == "its recipe asks for 3 CPUs (resources.cpus) but the largest Ray node has 2"
            executor.submit(greedy)
            assert _probed(probes, "probe_cpus")["threads"] == 2
            deadline = time.monotonic() + 15
            while ray.available_resources().get("CPU", 0) != 0:  # the running task holds both CPUs
                assert time.monotonic() < deadline, ray.available_resources()
                time.sleep(0.2)
            (probes / "release").touch()
            job, outcome = executor.next_done()
            assert job is greedy and outcome.status == "ok", outcome.error
            assert (tmp_path / "out" / greedy.key).is_file()
        finally:
            executor.close()
    finally:
        ray.shutdown()


def test_several_workers_start_the_largest_models_first_and_one_worker_keeps_the_listed_order(tmp_path):
    from onnxsmith.batch.runner import BatchOptions, run_batch

    zoo = make_zoo(tmp_path / "zoo", {"a.onnx": "cnn", "b.onnx": "transformer", "c.onnx": "external", "d.onnx": "mlp"}, broken=False)

    class Recorder:
        def __init__(self) -> None:
            self.keys: list[str] = []

        def planned(self, total: int, skipped: int) -> None: ...

        def started(self, job, attempt: int) -> None:
            self.keys.append(job.key)

        def finished(self, result) -> None: ...

    orders = {}
    for workers in (2, 1):
        recorder = Recorder()
        options = BatchOptions(workers=workers, latency_rounds=0, resume=False)
        summary = run_batch(zoo, tmp_path / f"out{workers}", validate_recipe({"passes": ["cleanup"]}), options, recorder)
        assert [m.status for m in summary.models] == ["ok"] * 4
        orders[workers] = recorder.keys
    # external.onnx is small but its .data file is not: the model's bytes count, not the .onnx file's
    sizes = {rel: (zoo / rel).stat().st_size for rel in ("a.onnx", "b.onnx", "c.onnx", "d.onnx")}
    sizes["c.onnx"] += (zoo / "external.onnx.data").stat().st_size
    assert orders[2] == sorted(sizes, key=sizes.get, reverse=True)
    assert orders[1] == ["a.onnx", "b.onnx", "c.onnx", "d.onnx"]


def test_a_model_calibrates_on_the_npz_beside_it_unless_data_is_given(tmp_path):
    zoo = make_zoo(tmp_path / "zoo", {"a/cnn.onnx": "cnn", "b/mlp.onnx": "mlp"}, broken=False)
    shutil.copy(FIXTURES / "cnn.npz", zoo / "a/cnn.npz")  # mlp has none beside it
    jobs = {job.key: job for job in discover_jobs(zoo, tmp_path / "out", validate_recipe({"passes": ["cleanup"]}))}
    assert jobs["a/cnn.onnx"].recipe["calibration"]["data"] == str(zoo / "a/cnn.npz")
    assert jobs["b/mlp.onnx"].recipe["calibration"]["data"] is None
    given = validate_recipe({"passes": ["cleanup"], "calibration": {"data": str(FIXTURES / "cnn.npz")}})
    assert discover_jobs(zoo, tmp_path / "out", given)[0].recipe["calibration"]["data"] == str(FIXTURES / "cnn.npz")

    # the int8 preset needs data: the cnn converts on its own .npz, the mlp fails saying what it lacks
    result = run_cli("batch", str(zoo), "-o", str(tmp_path / "out"), "--preset", "int8", "-j", "1", "--latency-rounds", "0", "--json")
    models = by_path(result.json())
    assert models["a/cnn.onnx"]["status"] == "ok", models["a/cnn.onnx"]["error"]
    assert models["b/mlp.onnx"]["status"] == "failed" and "needs calibration data" in models["b/mlp.onnx"]["error"]
    assert result.code == 6


def test_the_batch_table_lists_each_failure_on_one_line_below_it(tmp_path):
    zoo = make_zoo(tmp_path / "zoo", {"cnn.onnx": "cnn"})
    result = run_cli("batch", str(zoo), "-o", str(tmp_path / "out"), "-j", "1", "--latency-rounds", "0", env={"COLUMNS": "80"})
    assert result.code == 6
    failures = [line for line in result.stdout.splitlines() if line.startswith("failed ")]
    assert len(failures) == 2 and any(line.startswith("failed broken/truncated.onnx: ") for line in failures)
