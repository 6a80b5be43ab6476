"""Accelerator specs: shipped files load; every malformed field is named in one error."""

import copy
import dataclasses
import itertools
import tomllib

import pytest

from tvm_memflat.errors import MemflatError
from tvm_memflat.spec import CONFIG_DIR, load_spec, parse_spec, shipped_specs


def _data(name="vta_like"):
    return tomllib.loads((CONFIG_DIR / f"{name}.toml").read_text())


def test_shipped_specs_load():
    assert shipped_specs() == ["edge_npu_1m", "mcu_256k", "vta_like", "vta_like_fused"]
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
    (lambda d: d["machine"].update(kind="systolic"), "machine.kind must be one of 'scratchpad'"),
    (lambda d: d["machine"].pop("kind"), "machine.kind is missing"),
    (lambda d: d["machine"].update(cores=2), "machine.cores is not a known key"),
    (lambda d: d["memory"][2].update(writable="yes"), "memory[2].writable must be true or false"),
    (lambda d: d["memory"][1].update(double_buffered=1),
     "memory[1].double_buffered must be true or false, got 1"),
    (lambda d: d["memory"][0].update(writable=False), "memory[0].writable is false, but the"
     " memory holds activations"),
    (lambda d: d["dram"].update(writable=0), "dram.writable must be true or false"),
    (lambda d: d["weights"].update(location="cached"), "weights.location must be one of"),
    (lambda d: d["weights"].update(memory="input_buffer"),
     "weights.memory must name a memory that holds weights (weight_buffer), got 'input_buffer'"),
    (lambda d: d["weights"].update(memory="nowhere"), "weights.memory must name a memory"),
    (lambda d: d["memory"][1].update(writable=False),
     "weights.memory names read-only 'weight_buffer': streamed weights are staged"),
    (lambda d: d["accounting"].update(input="dram"),
     "accounting.input must be one of 'sram', 'stream', got 'dram'"),
    (lambda d: d["accounting"].update(output=True), "accounting.output must be one of"),
    (lambda d: d["accounting"].update(inputs="sram"), "accounting.inputs is not a known key"),
    (lambda d: d.update(onchip_path=[{"from": "accumulator_buffer", "to": "cache",
                                      "bandwidth_bytes_per_cycle": 8}]),
     "onchip_path[0].to names no memory: 'cache'"),
    (lambda d: d.update(onchip_path=[{"from": "accumulator_buffer", "to": "input_buffer"}]),
     "onchip_path[0].bandwidth_bytes_per_cycle is missing"),
    (lambda d: d.update(machine={"kind": "scratchpad"}, onchip_path=[
        {"from": "accumulator_buffer", "to": "input_buffer", "bandwidth_bytes_per_cycle": 8}]),
     'onchip_path[0] applies to machine.kind = "buffered" only'),
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


def test_shipped_specs_say_what_kind_of_machine():
    mcu, npu, vta = (load_spec(n) for n in ("mcu_256k", "edge_npu_1m", "vta_like"))
    assert (mcu.machine_kind, mcu.weights_location, mcu.weights_memory) == (
        "scratchpad", "resident", "flash")
    flash = mcu.memory("flash")
    assert flash.size_bytes == 2 * 1024 * 1024 and not flash.writable
    assert mcu.memory("sram").writable and not mcu.dram.writable
    assert (npu.machine_kind, npu.weights_location, npu.weights_memory) == (
        "scratchpad", "streamed", "shared_sram")
    assert not npu.dram.writable
    assert (vta.machine_kind, vta.weights_location, vta.weights_memory) == (
        "buffered", "streamed", "weight_buffer")
    assert vta.dram.writable and vta.onchip_paths == ()
    fused = load_spec("vta_like_fused")  # vta_like plus the path VTA lacks
    assert [(p.source, p.dest) for p in fused.onchip_paths] == [
        ("accumulator_buffer", "input_buffer")]
    assert fused.memories == vta.memories and fused.compute == vta.compute
    for spec in (mcu, npu, vta):
        assert (spec.accounting.input, spec.accounting.output) == ("sram", "sram")
        assert not any(m.double_buffered for m in spec.memories)
        d = spec.to_dict()
        assert d["machine_kind"] == spec.machine_kind
        assert d["accounting"] == {"input": "sram", "output": "sram"}


@pytest.mark.parametrize("kind, location, inp, out", itertools.product(
    ("scratchpad", "buffered"), ("resident", "streamed"), ("sram", "stream"), ("sram", "stream")))
def test_new_keys_take_every_valid_value(kind, location, inp, out):
    data = copy.deepcopy(_data())
    data["machine"]["kind"] = kind
    data["weights"]["location"] = location
    data["accounting"].update(input=inp, output=out)
    data["memory"][1]["double_buffered"] = True
    data["dram"]["writable"] = False
    spec = parse_spec(data, "test")
    assert (spec.machine_kind, spec.weights_location) == (kind, location)
    assert (spec.accounting.input, spec.accounting.output) == (inp, out)
    assert spec.memory("weight_buffer").double_buffered
    assert not spec.dram.writable


def test_onchip_paths_and_read_only_weight_memory():
    paths = [{"from": "accumulator_buffer", "to": "input_buffer", "bandwidth_bytes_per_cycle": 16}]
    spec = parse_spec(_mutated(lambda d: d.update(onchip_path=paths)), "test")
    assert [(p.source, p.dest, p.bandwidth_bytes_per_cycle) for p in spec.onchip_paths] == [
        ("accumulator_buffer", "input_buffer", 16)]
    # A read-only memory that holds weights (flash) is fine for resident weights.
    spec = parse_spec(_mutated(lambda d: (d["memory"][1].update(writable=False),
                                          d["weights"].update(location="resident"))), "test")
    assert not spec.memory("weight_buffer").writable


def test_defaults_for_a_spec_without_the_new_tables():
    def strip(d):
        for key in ("machine", "weights", "accounting"):
            d.pop(key)
        d["dram"].pop("writable")
        for m in d["memory"]:
            m.pop("writable"), m.pop("double_buffered")
    spec = parse_spec(_mutated(strip), "old")
    assert spec.machine_kind == "scratchpad"
    assert (spec.weights_location, spec.weights_memory) == ("streamed", "weight_buffer")
    assert (spec.accounting.input, spec.accounting.output) == ("sram", "sram")
    assert not spec.dram.writable  # a scratchpad machine has nowhere to spill by default
    assert all(m.writable and not m.double_buffered for m in spec.memories)
    # Everything else is read as before.
    full = load_spec("vta_like")
    assert (spec.compute, spec.memories) == (full.compute, full.memories)
    buffered = parse_spec(_mutated(lambda d: (strip(d), d.update(machine={"kind": "buffered"}))),
                          "old")
    assert buffered.dram.writable
    partial = parse_spec(_mutated(lambda d: d["accounting"].pop("output")), "test")
    assert partial.accounting.output == "sram"
    # Resident weights need a memory that holds them.
    with pytest.raises(MemflatError, match="weights.memory is missing, and no"):
        parse_spec(_mutated(lambda d: (d["weights"].update(location="resident"),
                                       d["weights"].pop("memory"),
                                       d["memory"][1].update(holds=["activations"]))), "test")


def test_shipped_specs_are_package_data():
    from importlib import resources

    assert CONFIG_DIR.name == "configs" and CONFIG_DIR.parent.name == "tvm_memflat"
    for name in shipped_specs():
        shipped = resources.files("tvm_memflat").joinpath("configs", f"{name}.toml")
        assert shipped.read_text() == (CONFIG_DIR / f"{name}.toml").read_text()
        assert load_spec(name).path == str(CONFIG_DIR / f"{name}.toml")
