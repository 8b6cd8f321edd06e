"""prepare under faults and bad input: killed parent, changed inputs, huge cells, duplicate ids,
bad lattices, non-UTF-8 bytes, a foreign output directory, slow records, dead workers, noise."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pandas as pd
import pytest

from xxact_jax.data import build_dataset
from xxact_jax.data import embedded
from xxact_jax.data import open_dataset
from xxact_jax.data import readers
from xxact_jax.data import store
from xxact_jax.data import worker_pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Materials Project mp-28520 (Rb2SnTe5, CC BY 4.0, from mp_36k): spglib prints two "failed"
# lines to stderr from C on it at symprec 0.1, then succeeds (space group 140).
MP_28520_CIF = """# generated using pymatgen
data_Rb2SnTe5
_symmetry_space_group_name_H-M   'P 1'
_cell_length_a   10.07392986
_cell_length_b   10.07392986
_cell_length_c   10.07392986
_cell_angle_alpha   127.38042207
_cell_angle_beta   127.38042207
_cell_angle_gamma   77.63089198
_symmetry_Int_Tables_number   1
_chemical_formula_structural   Rb2SnTe5
_chemical_formula_sum   'Rb4 Sn2 Te10'
_cell_volume   625.94424925
_cell_formula_units_Z   2
loop_
 _symmetry_equiv_pos_site_id
 _symmetry_equiv_pos_as_xyz
  1  'x, y, z'
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_symmetry_multiplicity
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  Rb  Rb0  1  0.24603300  0.24603300  0.00000000  1
  Rb  Rb1  1  0.74603300  0.74603300  0.00000000  1
  Rb  Rb2  1  0.99567400  0.99567400  0.00000000  1
  Rb  Rb3  1  0.49567400  0.49567400  0.00000000  1
  Sn  Sn4  1  0.24707000  0.74707000  0.50000000  1
  Sn  Sn5  1  0.74707000  0.24707000  0.50000000  1
  Te  Te6  1  0.96053600  0.46053600  0.15374000  1
  Te  Te7  1  0.46053600  0.30679600  0.50000000  1
  Te  Te8  1  0.80679600  0.96053600  0.50000000  1
  Te  Te9  1  0.30679600  0.80679600  0.84626000  1
  Te  Te10  1  0.68654200  0.18654200  0.15305400  1
  Te  Te11  1  0.18654200  0.03348800  0.50000000  1
  Te  Te12  1  0.53348800  0.68654200  0.50000000  1
  Te  Te13  1  0.03348800  0.53348800  0.84694600  1
  Te  Te14  1  0.99696100  0.49696100  0.50000000  1
  Te  Te15  1  0.49696100  0.99696100  0.50000000  1
"""


def cubic_cif(a: float, name: str, element: str = "Na") -> str:
  return (f"data_{name}\n_cell_length_a {a}\n_cell_length_b {a}\n_cell_length_c {a}\n"
          "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
          "_symmetry_space_group_name_H-M 'P 1'\nloop_\n _symmetry_equiv_pos_as_xyz\n 'x, y, z'\n"
          "loop_\n _atom_site_type_symbol\n _atom_site_label\n _atom_site_fract_x\n"
          " _atom_site_fract_y\n _atom_site_fract_z\n _atom_site_occupancy\n"
          f" {element} {element}0 0 0 0 1\n")


def _cif_dir(tmp_path, fixtures_dir, name: str, extra: dict) -> str:
  """A CIF directory: the three valid fixture CIFs (mp-149, mp-22862, mp-2534) plus `extra`."""
  path = tmp_path / name
  shutil.copytree(os.path.join(fixtures_dir, "cif_dir"), path)
  for stem, text in extra.items():
    (path / f"{stem}.cif").write_bytes(text if isinstance(text, bytes) else text.encode())
  return str(path)


def _errors(output) -> dict:
  with open(os.path.join(output, "errors.jsonl")) as f:
    return {e["material_id"]: e["reason"] for e in map(json.loads, f)}


def _cli(*args) -> list:
  return [sys.executable, "-m", "xxact_jax.prepare", *args]


# ------------------------------------------------------------------ 1. orphaned workers


def _session_processes(session: int) -> list[tuple[int, int, str]]:
  """(pid, ppid, cmdline) of the live (non-zombie) processes of a session, from /proc.

  A session id survives reparenting, so orphans of a killed leader are still found.
  """
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
      continue
    state, ppid, _, sid = stat[stat.rindex(")") + 2:].split()[:4]
    if int(sid) == session and state != "Z":
      found.append((int(pid), int(ppid), cmdline))
  return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_prepare_leaves_no_orphans(tmp_path):
  process = subprocess.Popen(
      _cli(f"--input={embedded.SAMPLE_FILE}", f"--output={tmp_path}/out", "--workers=2",
           "--block_rows=16"),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
  try:
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "progress").exists():   # workers are up and featurising
      assert process.poll() is None and time.monotonic() < deadline, "no block finished"
      time.sleep(0.05)
    workers = [p for p in _session_processes(process.pid)
               if p[1] == process.pid and "spawn_main" in p[2]]
    assert len(workers) == 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while _session_processes(process.pid) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert _session_processes(process.pid) == []   # workers and the resource tracker
    os.set_blocking(process.stdout.fileno(), False)
    process.stdout.read()
    assert process.stdout.read() == b""   # EOF: nobody holds the pipe, `| tee` would end
  finally:
    for pid, _, _ in _session_processes(process.pid):
      os.kill(pid, signal.SIGKILL)
    process.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_main_during_first_use_featurisation_leaves_no_orphans(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cache = tmp_path / "cache"          # empty: the embedded sample is featurised on first use
  process = subprocess.Popen(
      [sys.executable, "-m", "xxact_jax.main", "--config=configs/supervised.py:runlocal",
       f"--workdir={tmp_path}/workdir"], cwd=repo,
      env=dict(os.environ, XXACT_JAX_CACHE=str(cache)),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
  try:
    deadline = time.monotonic() + 120
    while not [p for p in _session_processes(process.pid) if "spawn_main" in p[2]]:
      assert process.poll() is None and time.monotonic() < deadline, "no worker started"
      time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while _session_processes(process.pid) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert _session_processes(process.pid) == []
  finally:
    for pid, _, _ in _session_processes(process.pid):
      os.kill(pid, signal.SIGKILL)
    process.stdout.close()


def test_no_process_is_forked_anywhere_in_the_package():
  """JAX starts threads as soon as it computes: a fork after that can deadlock. Every process the
  package, its benchmarks and experiments start is spawned (multiprocessing "spawn", Grain's
  workers, subprocess without a preexec_fn)."""
  import re  # pylint: disable=g-import-not-at-top
  forks = re.compile(r"preexec_fn|os\.fork\(|get_context\(\s*[\"']fork|set_start_method\("
                     r"|multiprocessing\.(Pool|Process)\(")
  found = []
  for folder in ("xxact_jax", "benchmarks", "experiments"):
    for root, _, names in os.walk(os.path.join(ROOT, folder)):
      for name in names:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          text = open(path, encoding="utf-8").read()
          found += [f"{path}: {m.group(0)}" for m in forks.finditer(text)]
          # A ProcessPoolExecutor takes the platform's default start method (fork on Linux)
          # unless it is given one.
          for m in re.finditer(r"ProcessPoolExecutor\(", text):
            if "mp_context" not in text[m.end():m.end() + 300]:
              found.append(f"{path}: ProcessPoolExecutor without mp_context")
  assert not found, found


# ------------------------------------------------------------------ 2. changed input on resume


def test_resume_refuses_changed_input_and_accepts_a_touched_one(tmp_path, fixtures_dir, caplog):
  source = tmp_path / "mp.csv.gz"
  shutil.copy(os.path.join(fixtures_dir, "mp_small.csv.gz"), source)
  out = str(tmp_path / "ds")
  args = dict(workers=0, block_rows=4, num_shards=2)
  build_dataset.prepare_dataset([str(source)], out, shard=1, **args)
  original = source.read_bytes()
  table = pd.read_csv(source)
  table.loc[5, "band_gap"] += 1.0   # same rows, other content
  table.to_csv(source, index=False)
  with pytest.raises(ValueError, match=r"mp\.csv\.gz' changed since .*same inputs to resume"):
    build_dataset.prepare_dataset([str(source)], out, shard=0, **args)

  source.write_bytes(original)    # same bytes, new mtime: resumes
  summary = build_dataset.prepare_dataset([str(source)], out, shard=0, **args)
  assert summary["complete"] and summary["blocks_done_before"] == 0

  # A plan written before fingerprints existed still resumes, with a warning.
  legacy = str(tmp_path / "legacy")
  build_dataset.prepare_dataset([str(source)], legacy, shard=1, **args)
  kv = store.open_kvstore(legacy)
  plan = store.read_json(kv, "plan.json")
  del plan["input_fingerprints"], plan["duplicate_rows"]
  for key in ("max_reflections", "max_xrd_work", "allow_duplicate_ids"):
    del plan["config"][key]
  store.write_json(kv, "plan.json", plan)
  with caplog.at_level(logging.WARNING):
    assert build_dataset.prepare_dataset([str(source)], legacy, shard=0, **args)["complete"]
  assert "before inputs were fingerprinted" in caplog.text


# ------------------------------------------------------------------ 3. huge cells


def test_huge_cells_are_error_rows_quickly_and_in_bounded_memory(tmp_path, fixtures_dir):
  inputs = _cif_dir(tmp_path, fixtures_dir, "cifs", {"huge1000": cubic_cif(1000, "huge1000"),
                                                     "huge100": cubic_cif(100, "huge100")})

  # The memory limit (so that a regression fails here instead of exhausting the machine) is set
  # by the child itself: a preexec_fn forks this process, whose JAX threads make that unsafe
  # ("os.fork() was called ... will likely lead to a deadlock").
  limited = [sys.executable, "-c",
             "import resource, runpy, sys; "
             "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
             "sys.argv[0] = 'xxact_jax.prepare'; "
             "runpy.run_module('xxact_jax.prepare', run_name='__main__', alter_sys=True)"]
  jax.devices()   # JAX's threads are up in this process, as in any test session
  start = time.monotonic()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = subprocess.run(limited + _cli(f"--input={inputs}", f"--output={tmp_path}/out",
                                           "--workers=0")[3:],
                            capture_output=True, text=True, timeout=120)
  assert not [w for w in caught if "fork" in str(w.message)]
  assert result.returncode == 0, result.stderr[-3000:]
  assert time.monotonic() - start < 60
  errors = _errors(tmp_path / "out")
  assert set(errors) == {"huge1000", "huge100"}
  assert "3.23e+09 reflections" in errors["huge1000"] and "--max_reflections" in errors["huge1000"]
  assert "3.23e+06 reflections" in errors["huge100"]
  assert open_dataset(str(tmp_path / "out")).material_ids([0, 1, 2]) == [
      "mp-149", "mp-22862", "mp-2534"]


def test_slow_record_times_out_as_an_error_row(tmp_path, fixtures_dir):
  # 30 Å: 87,000 reflections, under the size limit, ~8 s of pymatgen (the JAX engine, outside
  # the workers' time limit, takes well under a second on it).
  inputs = _cif_dir(tmp_path, fixtures_dir, "cifs", {"slow": cubic_cif(30, "slow")})
  start = time.monotonic()
  summary = build_dataset.prepare_dataset([inputs], str(tmp_path / "out"), workers=0,
                                          record_timeout_s=0.5, xrd_engine="pymatgen")
  assert time.monotonic() - start < 6 and summary["valid_total"] == 3
  assert "took longer than 0.5 s (--record_timeout_s)" in _errors(tmp_path / "out")["slow"]


def test_a_timeout_that_library_code_swallows_still_fails_the_record():
  with pytest.raises(worker_pool._RecordTimeout):  # pylint: disable=protected-access
    with worker_pool._time_limit(0.05):  # pylint: disable=protected-access
      try:
        time.sleep(2)
      except BaseException:  # pylint: disable=broad-except  (as a bare `except:` would)
        pass
  with worker_pool._time_limit(0.05):  # pylint: disable=protected-access
    pass                           # a record within its limit is left alone
  time.sleep(0.1)                  # and no late alarm reaches the caller


class _KillsWorker:
  """A payload whose unpickling in the worker ends the process (as a segfault or the OOM killer
  would): no pymatgen involved, deterministic."""

  def __reduce__(self):
    return os._exit, (3,)


class _HangsWorker:
  """A payload whose unpickling blocks the worker where its own alarm cannot reach (as a hang in
  native code would)."""

  def __reduce__(self):
    return time.sleep, (600,)


def _record(name, payload):
  return readers.RawRecord(name, "cif", payload, {}, f"test:{name}")


@pytest.mark.slow
def test_a_record_that_kills_its_worker_becomes_an_error_row(fixtures_dir):
  si = open(os.path.join(fixtures_dir, "cif_dir", "mp-149.cif")).read()
  tasks = [(0, [_record("b", si), _record("kill", _KillsWorker())])]
  results = list(worker_pool.run_tasks(iter(tasks), 2, 5, max_elements=10))
  (_, _, (b, kill)), = results   # the task is redone one record at a time: b survives
  assert isinstance(b, dict) and b["spacegroup_number"] == 227
  assert "test:kill: the worker process died while featurising this record" in kill


@pytest.mark.slow
def test_a_record_that_hangs_its_worker_becomes_an_error_row(fixtures_dir, monkeypatch, caplog):
  monkeypatch.setattr(worker_pool, "TASK_ROWS", 1)   # stall deadline = rows × timeout + overrun
  monkeypatch.setattr(worker_pool, "_OVERRUN_S", 1.0)
  si = open(os.path.join(fixtures_dir, "cif_dir", "mp-149.cif")).read()
  tasks = [(0, [_record("a", si)]), (0, [_record("hang", _HangsWorker())])]
  with caplog.at_level(logging.WARNING):
    results = list(worker_pool.run_tasks(iter(tasks), 2, 0.5, max_elements=10))
  assert "no task finished for 1.5 s" in caplog.text
  (_, _, (a,)), (_, _, (hang,)) = results
  assert isinstance(a, dict)
  assert hang == "test:hang: featurisation did not finish within 1.5 s; its worker was killed"


# ------------------------------------------------------------------ 4. questionable input


def test_duplicate_ids_are_refused_or_become_error_rows(tmp_path, fixtures_dir):
  first = os.path.join(fixtures_dir, "cif_dir")
  second = str(tmp_path / "again")
  shutil.copytree(first, second)
  out = tmp_path / "ds"
  with pytest.raises(ValueError, match=r"3 duplicate material_id.*'mp-149' of row 0 .*"
                                       r"--allow_duplicate_ids") as raised:
    build_dataset.prepare_dataset([first, second], str(out), workers=0)
  assert os.path.join(second, "mp-149.cif") in str(raised.value)
  assert not out.exists()   # refused before anything was written

  summary = build_dataset.prepare_dataset([first, second], str(out), workers=0,
                                          allow_duplicate_ids=True, test_fraction=0.5)
  assert summary["valid_total"] == 3 and summary["errors_total"] == 3
  with open(out / "errors.jsonl") as f:
    reasons = {e["row"]: e["reason"] for e in map(json.loads, f)}
  assert "duplicate material_id 'mp-149' of row 0" in reasons[3]
  assert "duplicate material_id 'mp-2534' of row 2" in reasons[5]


def test_bad_cells_and_broken_cifs_get_clear_reasons(tmp_path, fixtures_dir):
  si = open(os.path.join(fixtures_dir, "cif_dir", "mp-149.cif")).read()
  lines = si.splitlines(keepends=True)
  inputs = _cif_dir(tmp_path, fixtures_dir, "cifs", {
      "negative_a": si.replace("_cell_length_a   3.86697465", "_cell_length_a   -4"),
      "flat": si.replace("60.00000000", "120.00000000"),
      "empty": "",
      "truncated": "".join(lines[:16]),
      "zero_occupancy": si.replace("  1\n", "  0\n"),
  })
  out = str(tmp_path / "out")
  summary = build_dataset.prepare_dataset([inputs], out, workers=0)
  assert summary["valid_total"] == 3
  errors = _errors(out)
  assert "_cell_length_a is -4; a cell length must be positive" in errors["negative_a"]
  assert "enclose no volume" in errors["flat"]
  assert "the CIF text is empty" in errors["empty"]
  assert "a loop_ has no columns or no values (a truncated CIF?)" in errors["truncated"]
  assert "every atom site has zero occupancy" in errors["zero_occupancy"]
  assert not any("ZeroDivisionError" in r or "unpack" in r for r in errors.values())


def test_csv_row_with_missing_fields_names_the_field(tmp_path, fixtures_dir):
  table = pd.read_csv(os.path.join(fixtures_dir, "mp_small.csv.gz")).head(3)
  path = tmp_path / "short.csv"
  text = table.to_csv(index=False)
  path.write_text(text + "mp-9,0\n")   # a row cut short: no cif, no labels
  out = str(tmp_path / "out")
  assert build_dataset.prepare_dataset([str(path)], out, workers=0)["valid_total"] == 3
  assert "short.csv:row 3: column 'cif' is empty" in _errors(out)["mp-9"]


def test_non_utf8_bytes_name_file_row_and_line(tmp_path, fixtures_dir):
  table = pd.read_csv(os.path.join(fixtures_dir, "mp_small.csv.gz"))
  raw = table.to_csv(index=False).encode()
  cif = table.loc[3, "cif"].encode()
  broken_cif = cif.replace(b"_cell_length_b", b"_cell_length_b\xff", 1)
  path = tmp_path / "latin.csv"
  path.write_bytes(raw.replace(cif, broken_cif, 1))
  out = str(tmp_path / "out")
  summary = build_dataset.prepare_dataset([str(path)], out, workers=0)
  assert summary["valid_total"] == 7 and summary["errors_total"] == 1
  reason = _errors(out)[table.loc[3, "material_id"]]
  assert "latin.csv:row 3: column 'cif' is not valid UTF-8 (byte 0xff at line 5" in reason

  cifs = _cif_dir(tmp_path, fixtures_dir, "cifs",
                  {"bad": cubic_cif(4, "bad").encode().replace(b"data_bad", b"data_b\xe9")})
  build_dataset.prepare_dataset([cifs], str(tmp_path / "out2"), workers=0)
  assert ("bad.cif: not valid UTF-8: byte 0xe9 at line 1 (byte offset 6)"
          in _errors(tmp_path / "out2")["bad"])


def test_output_directory_with_unrelated_files_is_refused(tmp_path, fixtures_dir):
  out = tmp_path / "home"
  out.mkdir()
  (out / "notes.txt").write_text("my notes")
  with pytest.raises(ValueError, match=r"not empty and holds no dataset.*'notes.txt'"):
    build_dataset.prepare_dataset([os.path.join(fixtures_dir, "cif_dir")], str(out), workers=0)
  assert os.listdir(out) == ["notes.txt"]
  result = subprocess.run(_cli(f"--input={fixtures_dir}/cif_dir", f"--output={out}"),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "not empty" in result.stderr
  assert "Traceback" not in result.stderr
  empty = tmp_path / "empty"
  empty.mkdir()   # an empty directory is fine (embedded.cached_dataset stages into one)
  assert build_dataset.prepare_dataset([os.path.join(fixtures_dir, "cif_dir")], str(empty),
                                       workers=0)["complete"]


def _skewed_cubic_cif() -> str:
  """Simple cubic Na (a = 4 Å) given in a valid but skewed basis (b = 20a + b'):
  its point-group rotations have entries beyond int8 in that basis."""
  from pymatgen.core import Lattice, Structure  # pylint: disable=g-import-not-at-top
  lattice = Lattice([[4.0, 0, 0], [80.0, 4.0, 0], [0, 0, 4.0]])
  return Structure(lattice, ["Na"], [[0, 0, 0]]).to(fmt="cif")


def test_store_structures_keeps_a_skewed_cell_as_a_row_without_structure(tmp_path,
                                                                        fixtures_dir):
  # Was an error row: OverflowError "Python integer -1601 out of bounds for int8".
  cifs = _cif_dir(tmp_path, fixtures_dir, "cifs", {"skewed": _skewed_cubic_cif()})
  for flag in (False, True):
    out = str(tmp_path / f"out_{flag}")
    summary = build_dataset.prepare_dataset([cifs], out, workers=0, store_structures=flag,
                                            test_fraction=0.0)
    assert summary["valid_total"] == 4 and summary["errors_total"] == 0
    ds = open_dataset(out)
    skewed = ds.material_ids(np.arange(len(ds))).index("skewed")
    assert ds[skewed]["crystal_system"] == 6 and ds[skewed]["spacegroup_number"] == 221
    if flag:
      stored = ds.read_batch(np.arange(len(ds)), ("has_structure",))["has_structure"]
      assert not stored[skewed] and stored.sum() == 3


# ------------------------------------------------------------------ 5. noise


def test_spglib_noise_is_silenced(tmp_path, capfd):
  path = tmp_path / "cifs"
  path.mkdir()
  (path / "mp-28520.cif").write_text(MP_28520_CIF)
  capfd.readouterr()
  build_dataset.prepare_dataset([str(path)], str(tmp_path / "out"), workers=0)
  assert "spglib" not in capfd.readouterr().err
  assert open_dataset(str(tmp_path / "out"))[0]["spacegroup_number"] == 140

  # The ETA's warm-up is tested with the shared progress line (tests/test_progress.py).

