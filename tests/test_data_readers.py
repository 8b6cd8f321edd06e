"""Readers: CSV (+gz), Alexandria json.bz2, CIF directory, and their errors."""

import math
import os

import pandas as pd
import pytest

from xxact_jax.data import readers
from xxact_jax.data import worker_pool


def test_csv_gz(fixtures_dir):
  path = os.path.join(fixtures_dir, "mp_small.csv.gz")
  records = list(readers.iter_records(path))
  assert len(readers.record_ids(path)) == len(records) == 8
  assert [r.material_id for r in records[:3]] == ["mp-149", "mp-22862", "mp-2534"]
  assert records[0].kind == "cif" and "_cell_length_a" in records[0].payload
  assert records[0].labels["band_gap"] == pytest.approx(0.8527, abs=1e-4)
  assert records[1].location.endswith("mp_small.csv.gz:row 1")


def test_alexandria_json_bz2(fixtures_dir):
  path = os.path.join(fixtures_dir, "alexandria_000.json.bz2")
  records = list(readers.iter_records(path))
  assert readers.input_format(path) == "alexandria" and len(records) == 5
  assert records[0].material_id == "agm000000000" and records[0].kind == "entry"
  assert records[0].labels["band_gap"] == pytest.approx(0.8527, abs=1e-4)  # band_gap_ind
  results = worker_pool.featurize_records(records, 10)
  assert [r["spacegroup_number"] for r in results] == [e.payload["data"]["spg"] for e in records]


def test_cif_directory_with_partial_labels(fixtures_dir):
  path = os.path.join(fixtures_dir, "cif_dir")
  records = list(readers.iter_records(path))
  assert [r.material_id for r in records] == ["mp-149", "mp-22862", "mp-2534"]
  table = pd.read_csv(os.path.join(path, "labels.csv")).set_index("material_id")
  assert records[1].labels["formation_energy_per_atom"] == pytest.approx(
      table.loc["mp-22862", "formation_energy_per_atom"])
  assert all(math.isnan(v) for v in records[2].labels.values())   # not in labels.csv
  assert all(r.error is None for r in records)


def test_bad_inputs_name_the_path(tmp_path):
  missing = str(tmp_path / "nope.csv")
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    readers.record_ids(missing)
  other = tmp_path / "data.parquet"
  other.write_text("x")
  with pytest.raises(ValueError, match="data.parquet.*unknown format"):
    readers.input_format(str(other))
  no_cif = tmp_path / "labels.csv"
  no_cif.write_text("material_id,band_gap\nmp-1,0.5\n")
  with pytest.raises(ValueError, match="labels.csv.*no 'cif' column"):
    list(readers.iter_records(str(no_cif)))
  broken = tmp_path / "alexandria_001.json.bz2"
  broken.write_bytes(b"not bzip2")
  with pytest.raises(ValueError, match="alexandria_001.json.bz2.*not a readable"):
    readers.record_ids(str(broken))


def test_bad_records_carry_errors_naming_record_and_field(fixtures_dir):
  records = list(readers.iter_records(os.path.join(fixtures_dir, "mp_bad.csv")))
  assert records[3].error == f"{records[3].location}: label 'band_gap' is not a number: 'abc'"
  assert math.isnan(records[4].labels["band_gap"]) and records[4].error is None
  results = worker_pool.featurize_records(records, 10)
  assert isinstance(results[0], dict) and isinstance(results[4], dict)
  assert "mp_bad.csv:row 1" in results[1] and "unknown element symbol 'Qq'" in results[1]
  assert "mp_bad.csv:row 2" in results[2] and "cif parse failed" in results[2]
