"""A checkpoint written by older code (hrm_core before its split into rooms, commit 93409eb)
still loads and resumes bitwise: the parameter names, the carry's fields and every pickled
name it holds are still understood. ``tests/fixtures/make_legacy_checkpoint.py`` wrote it."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from hrm_core import names
from hrm_core.config.compose import compose_config
from hrm_core.observe.callbacks import JsonlSink
from hrm_core.train.runtime import resolve_runtime
from hrm_core.train.trainer import Trainer
from tests.conftest import PROJECT

LEGACY = os.path.join(PROJECT, "tests", "fixtures", "legacy_checkpoint")


def _rows(rows):
    return [{k: v for k, v in r.items() if not names.is_timing(k)}
            for r in rows if names.RESUMED_FROM_STEP not in r]


def test_a_checkpoint_of_the_old_layout_resumes_bitwise(sudoku4_dataset, tmp_path):
    with open(os.path.join(LEGACY, "metrics.json")) as f:
        recorded = json.load(f)
    k = recorded["resume_step"]
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    shutil.copy(os.path.join(LEGACY, f"step_{k}.pt"), run_dir)
    cfg = compose_config([f"data_path={sudoku4_dataset}", f"checkpoint_path={run_dir}",
                          *recorded["overrides"], f"resume_from={os.path.join(run_dir, f'step_{k}.pt')}"])
    cpu = torch.device("cpu")
    trainer = Trainer(resolve_runtime(cfg, cpu), sudoku4_dataset, run_dir, cpu, [JsonlSink(run_dir)],
                      log=lambda *_: None)
    assert trainer.resumed_from_step == k
    trainer.fit()
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        got = _rows(json.loads(line) for line in f)
    expected = [r for r in _rows(recorded["rows"]) if r["step"] > k]
    assert [r["step"] for r in got] == [r["step"] for r in expected] and len(got) >= 4
    with open(os.path.join(LEGACY, "machine.txt")) as f:
        same_kernels = f.read().split(", ")[-1].strip() == torch.backends.cpu.get_cpu_capability()
    if same_kernels:
        assert got == expected  # bitwise, every metric at every step after the resume
    else:  # another CPU's kernels sum in another order: bitwise is not defined across them
        for g, e in zip(got, expected, strict=True):
            assert g.keys() == e.keys() and all(g[m] == pytest.approx(e[m], rel=1e-4, abs=1e-6) for m in e)


@pytest.mark.parametrize("zipped", [True, False])
def test_classes_pickled_under_their_old_module_paths_still_load(tmp_path, zipped):
    from hrm_core.config.schema import ArchConfig
    from hrm_core.train import checkpoint as ckpt

    arch = ArchConfig(hidden_size=48)
    path = str(tmp_path / "old.pt")
    if zipped:  # the zip format's pickle names the class in a member file: rename it there
        pickled = _pickled_with_old_path(arch, path)
        assert b"hrm_core.config\nArchConfig" in pickled
    else:  # protocol-2 GLOBALs are text: name the old module in the stream itself
        torch.save({"format_version": 1, "arch": arch}, path, _use_new_zipfile_serialization=False)
        with open(path, "rb") as f:
            raw = f.read().replace(b"hrm_core.config.schema\n", b"hrm_core.config\n")
        assert b"hrm_core.config\nArchConfig" in raw
        with open(path, "wb") as f:
            f.write(raw)
    loaded = ckpt.load(path)["arch"]
    assert type(loaded) is ArchConfig and loaded == arch


def _pickled_with_old_path(obj, path: str) -> bytes:
    import zipfile

    torch.save({"format_version": 1, "arch": obj}, path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in members if n.endswith("data.pkl"))
    members[name] = members[name].replace(b"hrm_core.config.schema\n", b"hrm_core.config\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for n, data in members.items():
            z.writestr(n, data)
    return members[name]
