"""benchmarks/bench_feature_encode.py on two freshly rendered rooms: it writes its JSON and finds
stacked encoding bit-identical to one set at a time."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_feature_encode_benchmark_writes_bit_identical_result(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_feature_encode

    out = tmp_path / "encode.json"
    rc = bench_feature_encode.main(["--data", str(tmp_path / "none"), "--scenes", "2", "--sets", "6", "--batch", "4",
                                    "--rounds", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and res["bit_identical"] is True
    assert "8" in res["sets_per_frame_count"] and all(0 < n <= 6 for n in res["sets_per_frame_count"].values())
    for row in res["ms_per_set_by_frame_count"].values():
        assert row["stacked"] > 0 and row["one_at_a_time"] > 0
        assert row["ratio"] == round(row["stacked"] / row["one_at_a_time"], 3)
    assert res["frame_keys"]["records"] > 0
