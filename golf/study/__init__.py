"""Papermill studies: a YAML grid of cells -> executed notebooks -> result folders -> a report.

Why notebooks at all: a study cell is something a researcher also wants to open, re-run with other
parameters and look at (papermill's model, as in microsoft/recommenders). Why so thin: every notebook in
`notebooks/` takes the same four cell parameters (preset, seed, bundle, overrides) plus `out`, calls
`run_cell` and shows the result. A cell's config is built from those four values alone, so the runner
computes the very same config hash *without* executing the notebook, which makes a study cached and
resumable, and a study YAML names config keys exactly as `golf run -s` does.

The package, by job:
    spec       studies/NAME.yaml: schema and checks
    grid       cells (axes x seeds), ids, shards
    cells      one cell: its config, its run, the inline views a notebook shows
    notebooks  papermill: notebook parameters, executing one notebook
    runner     plan, run (parallel, locked, resumable), report
    reuse      a cell whose run (same config hash) another study already made
    compare    a fresh run beside the committed reference, and the README's conclusions
"""

from golf.study.cells import (
    CELL_PARAMS,
    bundle_table,
    cell_config,
    epoch_table,
    plot_learning_curve,
    plot_train_loss,
    plot_ttt_epochs,
    probe_gap,
    result_table,
    run_cell,
)
from golf.study.compare import (
    CONCLUSIONS_FILE,
    check_conclusion,
    compare_study,
    conclusions_slice,
    load_conclusions,
    report_tables,
)
from golf.study.grid import Cell, cell_id, expand, parse_shard, parse_where, select_cells, shard_cells
from golf.study.runner import (
    ERROR_FILE,
    EXECUTED_DIR,
    RESULTS_DIR,
    WORK_DIR,
    Place,
    cell_status,
    place,
    plan,
    read_result,
    report_study,
    run_study,
    slice_ids,
)
from golf.study.spec import STUDIES_DIR, DataBuild, Grid, Study, list_studies, load_study, resolve_root

__all__ = [
    "CELL_PARAMS", "CONCLUSIONS_FILE", "ERROR_FILE", "EXECUTED_DIR", "RESULTS_DIR", "STUDIES_DIR", "WORK_DIR",
    "Cell", "DataBuild", "Grid", "Place", "Study", "bundle_table", "cell_config", "cell_id", "cell_status",
    "check_conclusion", "compare_study", "conclusions_slice", "epoch_table", "expand", "list_studies", "load_conclusions",
    "load_study", "parse_shard", "parse_where", "place", "plan", "plot_learning_curve", "plot_train_loss", "plot_ttt_epochs",
    "probe_gap",
    "read_result", "report_study", "report_tables", "resolve_root", "result_table", "run_cell", "run_study",
    "select_cells", "shard_cells", "slice_ids",
]
