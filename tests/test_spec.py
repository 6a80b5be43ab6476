"""Accelerator specs: shipped files load; every malformed field is named in one error."""

import copy
import dataclasses

import pytest
import tomllib

from tvm_memflat.errors import MemflatError
from tvm_memflat.spec import CONFIG_DIR, load_spec, parse_spec, shipped_specs


def _data(name="vta_like"):
    return tomllib.loads((CONFIG_DIR / f"{name}.toml").read_text())


def test_shipped_specs_load():
    assert shipped_specs() == ["edge_npu_1m", "mcu_256k", "vta_like"]
    vta = load_spec("vta_like")
    kib = {m.name: m.size_bytes // 1024 for m in vta.memories}
    assert kib == {"input_buffer": 32, "weight_buffer": 256, "accumulator_buffer": 128,
                   "micro_op_buffer": 32}
    assert vta.compute.macs_per_cycle == 16 * 16
    assert (vta.compute.activation_dtype, vta.compute.accumulator_dtype) == ("int8", "int32")
    assert load_spec("mcu_256k").activation_capacity_bytes == 256 * 1024
    assert load_spec("edge_npu_1m").activation_capacity_bytes == 1024 * 1024
    assert load_spec(CONFIG_DIR / "mcu_256k.toml") == load_spec("mcu_256k")


def test_spec_is_immutable():
    spec = load_spec("vta_like")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.memories[0].size_bytes = 1


def _mutated(edit):
    data = copy.deepcopy(_data())
    edit(data)
    return data


INVALID = [
    (lambda d: d.update(colour="red"), "colour is not a known key"),
    (lambda d: d["compute"].update(freq_hz=1), "compute.freq_hz is not a known key"),
    (lambda d: d["memory"][1].update(size_bytes=-4),
     "memory[1].size_bytes must be a positive integer, got -4"),
    (lambda d: d["memory"][0].update(size_bytes=0), "memory[0].size_bytes must be a positive"),
    (lambda d: d["memory"][0].update(size_bytes="32k"), "memory[0].size_bytes must be an integer"),
    (lambda d: d["memory"][0].update(size_bytes=3.5), "must be an integer, got float"),
    (lambda d: d["compute"].pop("clock_hz"), "compute.clock_hz is missing"),
    (lambda d: d.pop("dram"), "dram is missing"),
    (lambda d: d["compute"].update(activation_dtype="int4"), "compute.activation_dtype must be"),
    (lambda d: d["memory"][0].update(holds=["cats"]), "memory[0].holds must be"),
    (lambda d: d["memory"][0].update(alignment_bytes=24), "must be a power of two"),
    (lambda d: d["memory"][1].update(name="input_buffer"), "memory[1].name repeats"),
    (lambda d: d["memory"][0].update(holds=["weights"]), "no memory that holds activations"),
    (lambda d: d["dram"].update(latency_cycles=True), "dram.latency_cycles must be an integer"),
]


@pytest.mark.parametrize("edit, message", INVALID)
def test_invalid_specs_name_the_key(edit, message):
    with pytest.raises(MemflatError, match="^spec test: .*") as exc:
        parse_spec(_mutated(edit), "test")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_file_errors(tmp_path):
    with pytest.raises(MemflatError, match="unknown spec 'nope'.*vta_like"):
        load_spec("nope")
    with pytest.raises(MemflatError, match="no such spec file"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(MemflatError, match="not valid TOML"):
        load_spec(bad)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _to_toml(data: dict) -> str:
    """Just enough TOML writing for spec files (scalars, tables, arrays of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict | list)
             or (isinstance(v, list) and not any(isinstance(x, dict) for x in v))]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += [f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and any(isinstance(x, dict) for x in value):
            for table in value:
                lines += [f"[[{key}]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def test_toml_writer_round_trips():
    assert tomllib.loads(_to_toml(_data())) == _data()


@pytest.mark.parametrize("edit, message", INVALID)
@pytest.mark.parametrize("command", ["plan", "profile"])
def test_cli_refuses_invalid_specs_with_one_line(tmp_path, capsys, edit, message, command):
    from tvm_memflat.cli import main

    path = tmp_path / "bad.toml"
    path.write_text(_to_toml(_mutated(edit)))
    js = tmp_path / "out.json"
    assert main([command, "squeezenet1_1", "--spec", str(path), "--json", str(js)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("memflat: error: spec ") and message in err[0]
    assert not js.exists()
