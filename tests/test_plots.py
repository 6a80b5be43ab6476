"""Tests of the memory plots (`tvm_memflat.reports.plots`) on real and synthetic profiles."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.image import imread

from tvm_memflat.analysis.memory_profile import LayerRow, MemoryProfile, TensorLife, profile
from tvm_memflat.reports.plots import (
    MAX_NAMED_TICKS,
    MAX_TENSOR_BANDS,
    _layer_bars_figure,
    _tensor_bands,
    _timeline_figure,
    format_bytes,
    plot_layer_bars,
    plot_timeline,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _small_cnn():
    """conv3x3 pad 1 (8 ch) -> relu -> conv3x3 stride 2 -> relu -> max_pool2d on 1x3x32x32."""
    from tvm import relax

    bb, rng = relax.BlockBuilder(), np.random.default_rng(0)
    x = relax.Var("x", relax.TensorType((1, 3, 32, 32), "float32"))
    w1 = relax.const(rng.standard_normal((8, 3, 3, 3)).astype("float32"))
    w2 = relax.const(rng.standard_normal((8, 8, 3, 3)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c1 = bb.emit(relax.op.nn.conv2d(x, w1, padding=1), "c1")
            r1 = bb.emit(relax.op.nn.relu(c1), "r1")
            c2 = bb.emit(relax.op.nn.conv2d(r1, w2, strides=2, padding=1), "c2")
            r2 = bb.emit(relax.op.nn.relu(c2), "r2")
            gv = bb.emit_output(relax.op.nn.max_pool2d(r2, pool_size=2, strides=2))
        bb.emit_func_output(gv)
    return bb.get()


@pytest.fixture(scope="module")
def small_mod():
    return _small_cnn()


@pytest.fixture(scope="module")
def prof(small_mod) -> MemoryProfile:
    return profile(small_mod, model="small_cnn")


@pytest.fixture(scope="module")
def prof_int8(small_mod) -> MemoryProfile:
    return profile(small_mod, model="small_cnn", activation_dtype="int8", with_tvm=False)


def synthetic_profile(n_layers: int = 400, n_tensors: int = 600, *, views: int = 0,
                      seed: int = 0) -> MemoryProfile:
    """A hand-built chain profile: input, one output per layer, then long-lived side tensors.

    The last ``views`` side tensors are views of layer outputs (no storage of their own).
    """
    rng = np.random.default_rng(seed)
    tensors = [TensorLife("input", (1, 3, 64, 64), "float32", 3 * 64 * 64 * 4, -1, "(input)",
                          0, 0, is_input=True)]
    for i in range(n_layers):
        nbytes = int(4 * 16 * (64 * (1 - i / n_layers) + 4) ** 2)
        tensors.append(TensorLife(f"layer_{i}", (nbytes // 4,), "float32", nbytes, i,
                                  f"layer_{i}", i, min(i + 1, n_layers - 1),
                                  is_output=i == n_layers - 1))
    k = 0
    while len(tensors) < n_tensors:
        i = int(rng.integers(0, n_layers))
        nbytes = int(rng.integers(1, 40)) * 4096
        last = min(i + int(rng.integers(1, 30)), n_layers - 1)
        view_of = f"layer_{i}" if len(tensors) >= n_tensors - views else None
        tensors.append(TensorLife(f"side_{k}", (nbytes // 4,), "float32", nbytes, i,
                                  f"layer_{i}", i, last, view_of=view_of))
        k += 1
    live = [0] * n_layers
    for t in tensors:
        if t.view_of is None:
            for step in range(t.first, t.last + 1):
                live[step] += t.bytes
    ops = ("conv2d+relu", "max_pool2d", "add", "concatenate")
    layers = tuple(
        LayerRow(i, f"layer_{i}", ops[i % len(ops)], (tensors[i + 1].bytes // 4,),
                 tensors[i + 1].bytes, live[i], 1000, 0, (tensors[i].name,))
        for i in range(n_layers)
    )
    peak = int(np.argmax(live))
    return MemoryProfile(f"synthetic{n_layers}", "float32", layers, tuple(tensors), live[peak],
                         peak, 1000 * n_layers, tensors[0].bytes, tensors[n_layers].bytes)


def _check_png(path, min_size=(200, 300)):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1]
    assert image.shape[0] <= 4000 and image.shape[1] <= 4000
    assert image[..., :3].std() > 0.01  # not a blank canvas
    return image


def _only_file(folder):
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 1, files  # no temporary files left behind
    return files[0]


# ---------------------------------------------------------------------------- format_bytes


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (int(3.06 * 2**20), "3.06 MiB"),
        (int(1.2 * 2**30), "1.20 GiB"),
        (2**20 - 1, "1.00 MiB"),  # rounds up into the next unit, not "1024.00 KiB"
        (5 * 2**40, "5.00 TiB"),
        (-1536, "-1.50 KiB"),
        (np.int64(2048), "2.00 KiB"),
        (1536.0, "1.50 KiB"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


# ---------------------------------------------------------------------------- timeline


def test_timeline_png(prof, tmp_path):
    out = plot_timeline(prof, tmp_path / "timeline.png")
    assert out == tmp_path / "timeline.png"
    assert out.stat().st_size > 1000
    _check_png(out)
    assert _only_file(tmp_path) == "timeline.png"


def test_timeline_svg(prof, tmp_path):
    out = plot_timeline(prof, tmp_path / "timeline.svg", capacity_bytes=64 * 1024)
    text = out.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith(
        "</svg>")
    assert _only_file(tmp_path) == "timeline.svg"


def test_timeline_suffix_is_case_insensitive(prof, tmp_path):
    _check_png(plot_timeline(prof, tmp_path / "upper.PNG"))


def test_timeline_creates_parent_folders(prof, tmp_path):
    out = plot_timeline(prof, tmp_path / "a" / "b" / "t.png")
    _check_png(out)


def test_timeline_overwrites(prof, tmp_path):
    path = tmp_path / "t.png"
    path.write_bytes(b"old")
    plot_timeline(prof, path)
    _check_png(path)
    assert _only_file(tmp_path) == "t.png"


@pytest.mark.parametrize("name", ["plot.pdf", "plot.jpg", "plot", "plot.png.txt"])
def test_bad_suffix_raises_and_writes_nothing(prof, tmp_path, name):
    with pytest.raises(ValueError, match=r"plot file must end in \.png or \.svg"):
        plot_timeline(prof, tmp_path / name)
    with pytest.raises(ValueError, match=r"plot file must end in \.png or \.svg"):
        plot_layer_bars(prof, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_bad_suffix_does_not_create_folders(prof, tmp_path):
    with pytest.raises(ValueError):
        plot_timeline(prof, tmp_path / "new" / "plot.jpeg")
    assert list(tmp_path.iterdir()) == []


def test_compare_overlay(prof, prof_int8, tmp_path):
    out = plot_timeline(prof, tmp_path / "cmp.png", compare=prof_int8,
                        labels=("float32", "int8"), capacity_bytes=32 * 1024,
                        capacity_label="L2")
    _check_png(out)
    out_svg = plot_timeline(prof, tmp_path / "cmp.svg", compare=prof_int8)
    assert out_svg.stat().st_size > 1000


def test_compare_legend_and_annotations(prof, prof_int8):
    fig = _timeline_figure(prof, compare=prof_int8, capacity_bytes=96 * 1024,
                           capacity_label="L2")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    change = 100.0 * (prof_int8.peak_bytes - prof.peak_bytes) / prof.peak_bytes
    assert f"before: {format_bytes(prof.peak_bytes)} peak" in legend
    assert f"after: {format_bytes(prof_int8.peak_bytes)} peak (\u2212{-change:.1f} %)" in legend
    assert "L2 96.00 KiB" in legend
    notes = [t.get_text() for t in ax.texts]
    peak = prof.peak_layer
    assert f"before: peak {format_bytes(prof.peak_bytes)} at {peak.name} ({peak.op})" in notes
    assert any(n.startswith(f"after: peak {format_bytes(prof_int8.peak_bytes)} at ")
               for n in notes)
    # the capacity line sits at 96 KiB in the axis unit (KiB here)
    assert ax.get_ylabel() == "live activation memory (KiB)"
    assert any(np.allclose(line.get_ydata(), 96.0) for line in ax.get_lines())


def test_compare_increase_is_signed(prof, prof_int8):
    fig = _timeline_figure(prof_int8, compare=prof, labels=("int8", "fp32"))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("fp32: ") and "(+300.0 %)" in t for t in legend), legend


def test_single_profile_annotation_and_ticks(prof):
    fig = _timeline_figure(prof)
    ax = fig.axes[0]
    peak = prof.peak_layer
    assert f"peak {format_bytes(prof.peak_bytes)} at {peak.name} ({peak.op})" in [
        t.get_text() for t in ax.texts]
    assert [t.get_text() for t in ax.get_xticklabels()] == [r.name for r in prof.layers]
    assert ax.get_xlim() == (0.0, float(len(prof.layers)))
    assert ax.get_ylim()[1] > prof.peak_bytes / 1024.0  # peak inside the axes


@pytest.mark.parametrize("which", ["small", "synthetic"])
def test_tensor_bands_tile_the_live_bytes(prof, which):
    """At every step the bands of the live tensors are disjoint and stack up to the live bytes."""
    p = prof if which == "small" else synthetic_profile(60, 150, views=10)
    per_step = [[] for _ in p.layers]
    for tensor, bottom in _tensor_bands(p):
        assert tensor.view_of is None
        assert len(bottom) == tensor.last - tensor.first + 1
        for k, low in enumerate(bottom):
            per_step[tensor.first + k].append((low, low + tensor.bytes))
    for step, spans in enumerate(per_step):
        spans.sort()
        edges = [0.0] + [e for span in spans for e in span] + [float(p.live_bytes[step])]
        # consecutive spans touch: no gap, no overlap, top == live bytes
        assert all(a == b for a, b in zip(edges[0::2], edges[1::2], strict=True)), step


def test_one_band_per_owned_tensor(prof):
    fig = _timeline_figure(prof)
    (bands,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands.get_paths()) == sum(t.view_of is None for t in prof.tensors)


def test_views_are_not_drawn():
    synth = synthetic_profile(30, 60, views=5)
    fig = _timeline_figure(synth)
    (bands,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands.get_paths()) == 55


def test_bad_arguments(prof):
    with pytest.raises(ValueError, match="labels"):
        _timeline_figure(prof, compare=prof, labels=("only one",))
    with pytest.raises(ValueError, match="capacity_bytes"):
        _timeline_figure(prof, capacity_bytes=0)
    with pytest.raises(ValueError, match="top"):
        _layer_bars_figure(prof, top=0)


def test_capacity_line_scales_axis(prof, tmp_path):
    """A capacity above the peak is still visible, in MiB when it is that large."""
    fig = _timeline_figure(prof, capacity_bytes=2 * 2**20, capacity_label="SRAM")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "live activation memory (MiB)"
    assert ax.get_ylim()[1] > 2.0
    _check_png(plot_timeline(prof, tmp_path / "cap.png", capacity_bytes=2 * 2**20))


# ---------------------------------------------------------------------------- large profiles


def test_large_synthetic_profile(tmp_path):
    """400 layers and 600 tensors (InceptionV3-sized): filled curve, numeric ticks."""
    synth = synthetic_profile(400, 600)
    assert len(synth.tensors) >= MAX_TENSOR_BANDS
    fig = _timeline_figure(synth, capacity_bytes=8 * 2**20)
    ax = fig.axes[0]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels and all(label.lstrip("\u2212-").isdigit() for label in labels), labels
    out = plot_timeline(synth, tmp_path / "big.png", capacity_bytes=8 * 2**20)
    image = _check_png(out)
    assert image.shape[1] > image.shape[0]  # a wide timeline
    assert plot_timeline(synth, tmp_path / "big.svg").stat().st_size > 1000


def test_large_profile_with_bands_and_compare(tmp_path):
    """Below the band limit (~300 steps, ~400 tensors) the bands are drawn."""
    before = synthetic_profile(300, 400, seed=1)
    after = synthetic_profile(280, 350, seed=2)
    assert len(before.layers) > MAX_NAMED_TICKS
    fig = _timeline_figure(before, compare=after)
    assert [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert fig.axes[0].get_xlim() == (0.0, 300.0)
    _check_png(plot_timeline(before, tmp_path / "bands.png", compare=after))


def test_compare_with_other_layers_uses_numeric_ticks(prof):
    other = synthetic_profile(5, 8)
    fig = _timeline_figure(prof, compare=other)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels and all(label.lstrip("\u2212-").isdigit() for label in labels), labels


# ---------------------------------------------------------------------------- layer bars


def test_layer_bars_png_and_svg(prof, tmp_path):
    _check_png(plot_layer_bars(prof, tmp_path / "bars.png"), min_size=(150, 300))
    assert plot_layer_bars(prof, tmp_path / "bars.svg").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png", "bars.svg"]


def test_layer_bars_content(prof):
    fig = _layer_bars_figure(prof, top=30)
    ax = fig.axes[0]
    texts = [t.get_text().strip() for t in ax.texts]
    assert len(texts) == len(prof.layers)  # top is capped at the number of layers
    assert texts[0] == "100.0 %"
    expected = [f"{100.0 * r.live_bytes / prof.peak_bytes:.1f} %" for r in prof.top_layers(30)]
    assert texts == expected


def test_layer_bars_top_limits_rows(tmp_path):
    synth = synthetic_profile(400, 600)
    fig = _layer_bars_figure(synth, top=12)
    assert len(fig.axes[0].texts) == 12
    _check_png(plot_layer_bars(synth, tmp_path / "bars.png"))
