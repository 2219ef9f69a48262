"""Lines of one method share a colour, so every series of it must still look different."""
import pandas as pd

from dymu_eval.report.plots import _draw_lines, plt  # plots selects the Agg backend


def _row(run, method, vtu, data, tokens, score):
    return {"run": run, "method": method, "level": "low", "vtu": vtu, "schedule": "constant",
            "threshold_data": data, "tokens_mean": tokens, "pope": score}


def test_each_series_of_a_method_has_its_own_marker_in_every_panel():
    df = pd.DataFrame([
        _row("baseline", "baseline", "", "", 256, 84.0),
        _row("DyMU-low", "DyMU", "yes", "mix", 33, 83.0),
        _row("DyMU-mid", "DyMU", "yes", "mix", 80, 84.0),
        _row("DyMU-low w/o VTU", "DyMU", "no", "mix", 33, 50.0),
        _row("DyMU-mid photos", "DyMU", "yes", "photos", 60, 86.0),
    ])
    styles = []
    for part in (df, df.drop(index=1)):  # a benchmark missing a row must not shift the markers
        fig, ax = plt.subplots()
        _draw_lines(ax, part, "pope", dashed=False)
        styles.append({ln.get_label(): (ln.get_marker(), ln.get_linestyle(), ln.get_color()) for ln in ax.lines})
        plt.close(fig)
    full, partial = styles
    dymu = {k: v for k, v in full.items() if k.startswith("DyMU")}
    assert set(dymu) == {"DyMU (mix)", "DyMU w/o VTU (mix)", "DyMU (photos)"}
    assert len({marker for marker, _, _ in dymu.values()}) == 3
    assert len({color for _, _, color in dymu.values()}) == 1
    assert full["DyMU w/o VTU (mix)"][1] == ":" and full["DyMU (mix)"][1] == "-"
    assert all(partial[k] == full[k] for k in partial)
