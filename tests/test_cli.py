"""`memflat` command line: happy path and every bad-input case (exit 2, one line, no files)."""

import json
import os
import subprocess
import sys

import onnx
import pytest

from tvm_memflat.cli import main
from tvm_memflat.spec import CONFIG_DIR

from . import onnx_models


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _outputs(tmp_path):
    return str(tmp_path / "out" / "report.json"), str(tmp_path / "out" / "timeline.png")


def _assert_clean_failure(code, err, tmp_path, pattern):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("memflat: error: ")
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err
    left = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".png", ".svg")
            or p.name.startswith(".report") or p.name.startswith(".timeline")]
    assert not left, left


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return str(path)


def test_profile_writes_json_and_plot(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn())
    js, png = _outputs(tmp_path)
    code, out, err = _run(capsys, "profile", path, "--json", js, "--plot", png)
    assert code == 0, err
    report = json.loads(open(js).read())
    assert report["peak_bytes"] > 0 and report["macs"] > 0
    assert report["tvm_allocated_bytes"] >= report["tvm_allocation"]["output_bytes"]
    assert os.path.getsize(png) > 1000
    assert "peak activation memory" in out and "tensors live at the peak" in out


def test_profile_with_spec_reports_required_available_excess(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn())
    js = str(tmp_path / "r.json")
    code, out, _ = _run(capsys, "profile", path, "--spec", "mcu_256k", "--json", js)
    assert code == 0
    spec = json.loads(open(js).read())["spec"]
    assert spec["available_bytes"] == 256 * 1024
    assert spec["fits"] is True and spec["excess_bytes"] == 0
    assert "required" in out and "available" in out and "excess" in out
    assert json.loads(open(js).read())["activation_dtype"] == "int8"


def test_missing_file(tmp_path, capsys):
    js, png = _outputs(tmp_path)
    code, _, err = _run(capsys, "profile", str(tmp_path / "nope.onnx"), "--json", js, "--plot", png)
    _assert_clean_failure(code, err, tmp_path, "no such file")


def test_not_onnx(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a protobuf\n" * 10)
    js, png = _outputs(tmp_path)
    code, _, err = _run(capsys, "profile", str(bad), "--json", js, "--plot", png)
    _assert_clean_failure(code, err, tmp_path, "not an ONNX model")


@pytest.mark.parametrize("build, message", [
    (onnx_models.checker_failure, "fails onnx.checker"),
    (onnx_models.dynamic_cnn, "--input-shape x="),
    (onnx_models.unsupported_ops, "Celu, LpNormalization"),
])
def test_bad_model(tmp_path, capsys, build, message):
    path = _save(tmp_path, build())
    js, png = _outputs(tmp_path)
    code, _, err = _run(capsys, "profile", path, "--json", js, "--plot", png)
    _assert_clean_failure(code, err, tmp_path, message)


def test_dynamic_with_input_shape_works(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.dynamic_cnn())
    code, out, err = _run(capsys, "profile", path, "--input-shape", "x=1x3x16x16")
    assert code == 0, err


def test_external_data_outside_folder(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    path = onnx_models.with_external_data(str(folder), "../secret.bin")
    js, png = _outputs(tmp_path)
    code, _, err = _run(capsys, "profile", path, "--json", js, "--plot", png)
    _assert_clean_failure(code, err, tmp_path, "outside the model's folder")


def test_unknown_spec_and_bad_spec_key(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn())
    js, png = _outputs(tmp_path)
    code, _, err = _run(capsys, "profile", path, "--spec", "nope", "--json", js, "--plot", png)
    _assert_clean_failure(code, err, tmp_path, "unknown spec 'nope'")
    bad = tmp_path / "bad.toml"
    bad.write_text((CONFIG_DIR / "mcu_256k.toml").read_text() + "\nfrequency = 3\n")
    code, _, err = _run(capsys, "profile", path, "--spec", str(bad), "--json", js, "--plot", png)
    _assert_clean_failure(code, err, tmp_path, "frequency is not a known key")


def test_bad_plot_suffix_and_bad_arguments(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn())
    code, _, err = _run(capsys, "profile", path, "--plot", str(tmp_path / "t.jpg"))
    _assert_clean_failure(code, err, tmp_path, "must end in .png or .svg")
    code, _, err = _run(capsys, "profile", path, "--input-shape", "x=axb")
    _assert_clean_failure(code, err, tmp_path, "bad --input-shape")
    with pytest.raises(SystemExit) as exc:
        main(["profile", path, "--dtype", "float64"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_console_script_and_module_entry_point(tmp_path):
    """`python -m tvm_memflat` in a real process: exit status 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "tvm_memflat", "profile",
                           str(tmp_path / "missing.onnx")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"memflat: error: no such file: {tmp_path / 'missing.onnx'}"]


def test_optimize_reports_before_after_and_writes_outputs(tmp_path, capsys, monkeypatch):
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    js, png = _outputs(tmp_path)
    out_dir = tmp_path / "opt"
    monkeypatch.setenv("MEMFLAT_TUNE_DIR", str(tmp_path / "tune"))
    monkeypatch.setenv("MEMFLAT_PROGRESS", "1")  # progress lines, as on a terminal
    code, out, err = _run(capsys, "optimize", path, "--json", js, "--plot", png,
                          "--out", str(out_dir), "--tune-trials", "4", "--threads", "1")
    assert code == 0, err
    assert "round 1:" in err  # the greedy search's progress, one line per round that pays
    report = json.loads(open(js).read())
    # the schedules used are echoed: tuned, on one thread; the database is on disk
    assert "MetaSchedule (4 trials" in report["config"]["schedules"]
    assert "1 threads" in report["config"]["schedules"]
    assert list((tmp_path / "tune").glob("llvm-*.json"))
    for side in ("before", "after"):
        assert {"peak_bytes", "tvm_allocated_bytes", "macs", "latency_ms"} <= set(report[side])
    assert report["after"]["peak_bytes"] < report["before"]["peak_bytes"]
    # after is built by tvm_memflat.build: what it allocates at run time is its arena + output
    after = report["after"]
    assert after["tvm_allocated_bytes"] < report["before"]["tvm_allocated_bytes"]
    assert after["runtime_alloc_storage_bytes"] >= after["arena_bytes"]
    assert report["max_abs_error"] <= 1e-4 * report["max_abs_reference"]
    assert (out_dir / "optimized.py").read_text().count("strided_slice") >= 2
    assert os.path.getsize(png) > 1000


def test_optimize_bad_budgets(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    js, png = _outputs(tmp_path)
    code, _, err = _run(capsys, "optimize", path, "--memory-budget", "10", "--json", js,
                        "--plot", png)
    _assert_clean_failure(code, err, tmp_path, "cannot be met")
    code, _, err = _run(capsys, "optimize", path, "--latency-budget", "0.5x", "--json", js)
    _assert_clean_failure(code, err, tmp_path, "below the untiled module")
    code, _, err = _run(capsys, "optimize", path, "--latency-budget", "fast", "--json", js)
    _assert_clean_failure(code, err, tmp_path, "is not understood")
    code, _, err = _run(capsys, "optimize", path, "--spec", "mcu_256k", "--latency-budget",
                        "0.000001ms", "--json", js, "--no-cache")
    _assert_clean_failure(code, err, tmp_path, "the best latency reachable is")
    code, _, err = _run(capsys, "optimize", path, "--pareto", png)
    _assert_clean_failure(code, err, tmp_path, "--pareto needs the tuner")
    code, _, err = _run(capsys, "optimize", path, "--rpc", "k@localhost:9190")
    _assert_clean_failure(code, err, tmp_path, "--rpc needs --measure")
    with pytest.raises(SystemExit) as exc:
        main(["optimize", path, "--memory-budget", "-5"])
    assert exc.value.code == 2


def test_optimize_tuned_for_vta_like_writes_every_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEMFLAT_CACHE_DIR", str(tmp_path / "cache"))
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    out_dir = tmp_path / "opt"
    code, out, err = _run(capsys, "optimize", path, "--target", "vta_like",
                          "--latency-budget", "1.5x", "--out", str(out_dir))
    assert code == 0, err
    assert out.startswith("model")  # the configuration is echoed first
    report = json.loads((out_dir / "report.json").read_text())
    for side in ("before", "before_ours", "after"):
        assert {"peak_bytes", "tvm_allocated_bytes", "macs", "latency_ms", "device_bytes",
                "predicted_device_bytes", "runtime_alloc_storage_bytes"} <= set(report[side])
    for side in ("before_ours", "after"):  # both built by us: simulated on the spec
        assert {"cycles", "dram_traffic_bytes", "sram_high_water_bytes", "violations",
                "compulsory_traffic_bytes", "per_layer_min_traffic_bytes",
                "compute_bound_cycles"} <= set(report[side])
        assert report[side]["predicted_device_bytes"] == report[side]["device_bytes"]
    assert report["config"]["input"] == "sram" and "input_in_arena" in report["config"]
    assert "does NOT fit" in out or "fits" in out  # the vta_like verdict is shown
    tuner = report["tuner"]
    assert tuner["latency_budget"] == "1.5x"
    assert tuner["chosen"]["latency_ms"] <= tuner["limit_ms"] + 1e-9
    assert report["max_abs_error"] <= 1e-4 * report["max_abs_reference"]
    for name in ("timeline.png", "pareto.png", "occupancy.png", "optimized.py"):
        assert (out_dir / name).stat().st_size > 500, name
    # Second run: served from the cache, same choice.
    code, out2, err = _run(capsys, "optimize", path, "--target", "vta_like",
                           "--latency-budget", "1.5x", "--json", str(tmp_path / "r2.json"))
    assert code == 0, err
    again = json.loads((tmp_path / "r2.json").read_text())["tuner"]
    assert again["cached"] and again["chosen"] == tuner["chosen"]


def test_plan_reports_memories_and_writes_outputs(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    js, png = _outputs(tmp_path)
    csv_path = str(tmp_path / "layers.csv")
    code, out, err = _run(capsys, "plan", path, "--spec", "mcu_256k", "--json", js, "--plot", png,
                          "--csv", csv_path)
    assert code == 0, err
    assert out.splitlines()[0].startswith("model")  # the configuration is echoed first
    report = json.loads(open(js).read())
    for key in ("arena_bytes", "lower_bound_bytes", "spilled_bytes", "dram_traffic_bytes"):
        assert isinstance(report[key], int)
    assert report["arena_bytes"] >= report["lower_bound_bytes"] > 0
    sram = report["memories"][0]
    assert sram["memory"] == "sram" and sram["available_bytes"] == 262144
    assert "fits mcu_256k" in out or "does NOT fit" in out
    rows = open(csv_path).read().splitlines()
    assert rows[0].startswith("step,kernel,macs") and len(rows) > 2
    assert os.path.getsize(png) > 1000


def _mcu_spec_with_sram(tmp_path, size: str):
    """mcu_256k.toml with its SRAM size replaced by ``size`` (a TOML value)."""
    spec = tmp_path / "spec.toml"
    spec.write_text((CONFIG_DIR / "mcu_256k.toml").read_text().replace(
        "size_bytes = 262144", f"size_bytes = {size}"))
    return spec


def test_plan_over_capacity_says_so(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    spec = _mcu_spec_with_sram(tmp_path, "4096")
    js = str(tmp_path / "plan.json")
    code, out, err = _run(capsys, "plan", path, "--spec", str(spec), "--json", js)
    assert code == 0, err
    report = json.loads(open(js).read())
    assert report["fits"] is False and "does NOT fit" in out
    assert report["memories"][0]["arena_excess_bytes"] > 0
    # and says why: an MCU has no writable memory to spill to; fp32 counted as int8
    assert report["spilled_bytes"] == 0
    assert report["why"] and "no memory writable at run time" in report["why"][0]
    assert report["activation_view"] is True and "a view" in out


def test_plan_bad_spec_is_one_line_exit_2(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    spec = _mcu_spec_with_sram(tmp_path, "-1")
    js = str(tmp_path / "plan.json")
    code, _, err = _run(capsys, "plan", path, "--spec", str(spec), "--json", js)
    _assert_clean_failure(code, err, tmp_path, "memory[0].size_bytes")


def test_dtype_int8_applies_to_zoo_names_only(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn(h=16))
    code, out, err = _run(capsys, "plan", path, "--dtype", "int8", "--spec", "mcu_256k",
                          "--json", str(tmp_path / "p.json"))
    _assert_clean_failure(code, err, tmp_path, "applies to zoo names")


def test_optimize_with_the_front_search(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEMFLAT_PROGRESS", "1")  # progress lines, as on a terminal
    path = _save(tmp_path, onnx_models.small_cnn(h=32))
    js = str(tmp_path / "r.json")
    code, out, err = _run(capsys, "optimize", path, "--search", "front", "--input", "stream",
                          "--json", js)
    assert code == 0, err
    report = json.loads(open(js).read())
    assert report["max_abs_error"] <= 1e-4 * max(1.0, report.get("max_abs_reference", 1.0))
    assert "front" in report["config"]["search"]
    assert report["after"]["device_bytes"] == report["after"]["predicted_device_bytes"]
    assert "depth 1" in err  # the search's progress


@pytest.mark.parametrize("flag, value, message", [
    ("--tune-trials", "-3", "must be 0 or more"),
    ("--threads", "0", "must be positive"),
    ("--threads", "two", "not a whole number"),
])
def test_bad_schedule_options_are_one_line_exit_2(tmp_path, capsys, flag, value, message):
    path = _save(tmp_path, onnx_models.small_cnn())
    with pytest.raises(SystemExit) as exc:
        main(["optimize", path, flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_plan_on_a_buffered_spec_reports_per_call_tiles(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    js, png = _outputs(tmp_path)
    csv_path = str(tmp_path / "calls.csv")
    code, out, err = _run(capsys, "plan", path, "--spec", "vta_like", "--json", js,
                          "--plot", png, "--csv", csv_path)
    assert code == 0, err
    report = json.loads(open(js).read())
    assert report["fits"] is True and report["spilled_bytes"] == 0
    assert 0 < report["lower_bound_bytes"] <= report["arena_bytes"] <= 32768
    assert report["dram_traffic_bytes"] >= report["per_layer_min_traffic_bytes"] > 0
    assert all(c["footprint_bytes"]["input_buffer"] <= 32768 for c in report["calls"]
               if "input_buffer" in c["footprint_bytes"])
    assert "per-layer minimum" in out and "fits vta_like" in out and "oc" in out
    assert open(csv_path).read().startswith("step,kernel,kind,rows,cols")
    assert os.path.getsize(png) > 1000


def test_plan_on_the_fused_spec_says_what_stays_on_chip(tmp_path, capsys):
    """vta_like_fused: the same buffers, plus the path; the plan keeps intermediates
    on chip only where the layers' traffic drops, and says which."""
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    reports = {}
    for spec in ("vta_like", "vta_like_fused"):
        js = str(tmp_path / f"{spec}.json")
        code, out, err = _run(capsys, "plan", path, "--spec", spec, "--json", js)
        assert code == 0, err
        reports[spec] = (json.loads(open(js).read()), out)
    fused, out = reports["vta_like_fused"]
    plain, _ = reports["vta_like"]
    assert plain["kept_on_chip"] == [] and fused["kept_on_chip"]
    assert fused["activation_traffic_bytes"] < plain["activation_traffic_bytes"]
    assert fused["dram_traffic_bytes"] < plain["dram_traffic_bytes"]
    kept = [c for c in fused["calls"] if c["input_on_chip"] or c["output_on_chip"]]
    assert kept and all(c["reserved_bytes"] > 0 for c in kept)
    assert all(c["footprint_bytes"]["input_buffer"] <= 32768 for c in fused["calls"]
               if "input_buffer" in c["footprint_bytes"])
    assert "stay on chip" in out and ":chip" in out


def test_optimize_on_the_fused_spec_fuses_regions_for_less_traffic(tmp_path, capsys):
    """--spec vta_like_fused: the regions are fused depth-first for the least DRAM
    traffic within the cycle budget; the report says which, in which mode, and the
    simulated traffic after is lower."""
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    out_dir = tmp_path / "opt"
    code, out, err = _run(capsys, "optimize", path, "--spec", "vta_like_fused", "--target",
                          "vta_like", "--latency-budget", "3x", "--out", str(out_dir))
    assert code == 0, err
    assert "depth-first fusion on vta_like_fused" in out and "halos" in out
    report = json.loads((out_dir / "report.json").read_text())
    fusion = report["fusion"]
    assert fusion["steps"] and report["decisions"] == [s["step"] for s in fusion["steps"]]
    sim = report["simulation"]
    assert sim["after"]["dram_traffic_bytes"] == fusion["traffic_bytes"]
    assert sim["after"]["dram_traffic_bytes"] < sim["before"]["dram_traffic_bytes"]
    assert sim["after"]["total_cycles"] <= 3 * sim["before"]["total_cycles"]
    # fusion judges a relative budget on the spec's cycles: a time is bad input
    code, _, err = _run(capsys, "optimize", path, "--spec", "vta_like_fused",
                        "--latency-budget", "3ms")
    assert code == 2 and "relative latency budget" in err and len(err.strip().splitlines()) == 1


def test_a_buffered_spec_too_small_for_any_tile_is_exit_2(tmp_path, capsys):
    path = _save(tmp_path, onnx_models.small_cnn(h=64))
    spec = tmp_path / "tiny_vta.toml"
    spec.write_text((CONFIG_DIR / "vta_like.toml").read_text().replace(
        "size_bytes = 32768            # 2^15\nholds = [\"activations\"]",
        "size_bytes = 16\nholds = [\"activations\"]"))
    js = str(tmp_path / "plan.json")
    code, _, err = _run(capsys, "plan", path, "--spec", str(spec), "--json", js)
    _assert_clean_failure(code, err, tmp_path, "smallest tile")
