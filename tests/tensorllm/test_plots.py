"""The sweep's whole-model front marks the champion and the variants the promotion guard stopped, where they are."""

from __future__ import annotations

import pytest

from tensorllm import plots

ROWS = [{"name": "l2", "version": 2, "kind": "layer", "whole_model_attention_cr": 1.1, "val_acc": 0.50},
        {"name": "u3", "version": 3, "kind": "uniform", "whole_model_attention_cr": 2.0, "val_acc": 0.49},
        {"name": "g4", "version": 4, "kind": "greedy", "whole_model_attention_cr": 3.0, "val_acc": 0.52,
         "guard_stopped": True}]


@pytest.fixture
def drawn(monkeypatch):
    """The figure compression_front drew (kept open instead of closed, to look at it)."""
    figures, close = [], plots.plt.close
    monkeypatch.setattr(plots.plt, "close", figures.append)
    yield figures
    for fig in figures:
        close(fig)


def legend_points(fig) -> dict[str, list[tuple[float, float]]]:
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    by_label = {c.get_label(): [tuple(map(float, xy)) for xy in c.get_offsets()] for c in ax.collections}
    return {label: by_label.get(label, []) for label in labels}


def test_front_marks_the_champion_and_the_guards_stops_at_their_points(drawn, tmp_path):
    out = plots.compression_front(ROWS, 0.5, "val_acc", tmp_path / "front.png", champion=3)
    assert out.is_file() and out.stat().st_size > 1000
    points = legend_points(drawn[0])
    assert points["champion (v3)"] == [(2.0, 0.49)]  # the star sits on v3's point
    assert points["stopped by the guard"] == [(3.0, 0.52)]  # the best-looking point: why it is not the champion


def test_front_without_champion_or_stops_has_no_such_marks(drawn, tmp_path):
    rows = [{k: v for k, v in r.items() if k != "guard_stopped"} for r in ROWS]
    plots.compression_front(rows, 0.5, "val_acc", tmp_path / "front.png", champion=None)
    labels = set(legend_points(drawn[0]))
    assert not any(label.startswith("champion") for label in labels) and "stopped by the guard" not in labels
    assert {"single layer", "uniform ranks", "greedy", "base model"} <= labels
