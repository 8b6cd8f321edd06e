"""The shared progress line: no ETA during warm-up, then rate and ETA from what finished since."""

from xxact_jax import progress


def test_progress_line_waits_for_warm_up_then_reports_rate_and_eta(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
  lines = []
  p = progress.Progress(1000, "[shard 0/1]", unit="rows", interval=0.0, warmup=100,
                        emit=lines.append)
  clock[0] = 160.0           # a minute of start-up before the first rows
  p.advance(50)
  assert "ETA after warm-up" in lines[-1] and "50/1000 rows (5.0%)" in lines[-1]
  clock[0] = 170.0           # 100 rows in the 10 s since the first ones: 10 rows/s
  p.advance(100, errors=2)
  assert "10.0 rows/s, ETA 1m25s" in lines[-1] and "errors 2" in lines[-1]
  clock[0] = 255.0
  p.update(1000)
  assert "1000/1000 rows (100.0%)" in lines[-1] and "ETA 0m00s" in lines[-1]
  assert progress.format_seconds(3723) == "1h02m03s"
  assert progress.format_seconds(float("inf")) == "?"


def test_progress_prints_at_most_every_interval(monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
  lines = []
  p = progress.Progress(10, "report", interval=5.0, emit=lines.append)
  for i in range(1, 10):
    clock[0] = i * 1.0
    p.update(i)
  assert len(lines) == 1          # at t = 5 s
  p.update(10)
  assert len(lines) == 2 and "10/10" in lines[-1]
