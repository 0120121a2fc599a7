"""Turn a study's `result.json` files into tables and figures with seeds, intervals and p-values.

Why it reads only `results/<STUDY>/runs/*/result.json`: those files are the self-describing record each run
writes (STYLE principle 7). Logs, notebooks and metrics streams are never scraped, so a report can be rebuilt
at any time from the committed runs, and a half-written or foreign file is skipped with a reason instead of
silently poisoning an average.

The package, by job: `frame` reads the runs into data frames and groups them, `tables` and `figures`
compute and draw, and `sections` is the registry of what a study's YAML can list under `report:`. It knows
no study by name: a section reads the columns every result.json carries and the study columns named after
the config keys the study varied.

What it writes into the study folder (each only when a listed section's data supports it):
    summary.csv / summary.md   one row per configuration: val_bpb mean, std, 95% t-interval, n seeds
    gap.csv / gap.md           TTT gain (final epoch minus epoch 0) overall, on the adapted half A and the
                               held-out half B, with Welch p-values for A vs B and legal vs illegal
    slopes.csv / slopes.md     OLS slope of the gain per epoch, per configuration and half
    ablation.csv / ablation.md one value of an axis against the full stack, paired by seed
    figures/<name>.png|.svg    ttt_curves, ttt_slopes, curve_<key>, ablation, frontier

Why the gap and the slopes: the open question behind golf's TTT study is whether test-time training on
validation tokens generalises or memorises. Memorisation shows as a gain on the tokens trained on (A) that
does not transfer to the held-out ones (B), and as a gain that keeps growing linearly with epochs instead
of saturating. Every number in the tables comes from `golf.stats`; this module only groups and formats.

A "configuration" is the tuple of key columns (golf.report.frame.key_columns); runs that share it are
seeds of one cell. Tables show only the key columns that vary inside the study and state the constant ones once.
"""

from golf.report.frame import load_results, per_epoch_frame, read_results
from golf.report.sections import SECTIONS, parse_sections, write_report
from golf.report.tables import ablation_table, gap_table, slope_table, summary_table

__all__ = ["SECTIONS", "ablation_table", "gap_table", "load_results", "parse_sections", "per_epoch_frame",
           "read_results", "slope_table", "summary_table", "write_report"]
